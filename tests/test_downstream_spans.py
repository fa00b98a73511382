"""CLIENT spans around `mcptrace.downstream(...)`: parented, failed when the call fails, absent when sampled out."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, set_span_in_context

import mcptrace
from mcptrace.telemetry import _context
from mcptrace.telemetry._tracing import DownstreamErrors, DownstreamSpans

TRACE_ID, PARENT_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    wrapper, hook = DownstreamSpans(provider.get_tracer("test")), DownstreamErrors(None)
    _context.downstream_wrappers.append(wrapper)
    _context.downstream_hooks.append(hook)
    try:
        yield exporter
    finally:
        _context.downstream_wrappers.remove(wrapper)
        _context.downstream_hooks.remove(hook)
        provider.shutdown()


def two_calls_under(flags: int) -> None:
    """One call that works and one that raises, inside a remote parent span with the given trace flags."""

    async def main() -> None:
        parent = NonRecordingSpan(SpanContext(TRACE_ID, PARENT_ID, is_remote=True, trace_flags=TraceFlags(flags)))
        token = attach(set_span_in_context(parent))
        try:
            async with mcptrace.downstream("db", "SELECT 1"):
                pass
            with pytest.raises(RuntimeError):
                async with mcptrace.downstream("db", "SELECT 2"):
                    raise RuntimeError("boom")
        finally:
            detach(token)

    anyio.run(main)


def test_each_call_is_a_client_span_under_the_current_span_and_a_raised_error_fails_it(
    exported: InMemorySpanExporter,
) -> None:
    two_calls_under(TraceFlags.SAMPLED)
    spans: tuple[ReadableSpan, ...] = exported.get_finished_spans()
    assert [(s.name, s.kind) for s in spans] == [("db", SpanKind.CLIENT), ("db", SpanKind.CLIENT)]
    assert all(s.context.trace_id == TRACE_ID and s.parent is not None and s.parent.span_id == PARENT_ID
               for s in spans)
    ok, failed = spans
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description == "RuntimeError: boom"
    assert [e.name for e in failed.events] == ["exception"]


def test_a_sampled_out_trace_gets_no_client_spans(exported: InMemorySpanExporter) -> None:
    two_calls_under(TraceFlags.DEFAULT)
    assert exported.get_finished_spans() == ()
