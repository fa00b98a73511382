"""Spans around downstream calls, and trace ids on log lines.

The request's SERVER span is the SDK's own (`mcp.server._otel`); mcptrace adds
its attributes (see `middleware/_telemetry.py`), one CLIENT span per
`downstream(...)` call beneath it, and the ids of the active span on every log
line so a log search and a trace view land on the same request.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from mcptrace import _fields as f
from mcptrace.telemetry._metrics import ServerMetrics

TRACER_NAME = "mcptrace"


#: The last span's ids and their hex forms: a request writes several lines under one span.
_last_ids: tuple[int, int, str, str] = (0, 0, "", "")


def add_trace_ids(record: MutableMapping[str, Any]) -> None:
    """Log processor: `trace_id` and `span_id` (W3C hex) of the active span, when there is one."""
    global _last_ids
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        last = _last_ids
        if last[0] != context.trace_id or last[1] != context.span_id:
            last = _last_ids = (context.trace_id, context.span_id,
                                format(context.trace_id, "032x"), format(context.span_id, "016x"))
        record[f.TRACE_ID] = last[2]
        record[f.SPAN_ID] = last[3]


class DownstreamSpans:
    """`downstream_wrappers` factory: a CLIENT span per dependency call, named after the service."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def __call__(self, service: str, query_hash: str | None) -> AbstractContextManager[Any]:
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            # The trace was sampled out: its CLIENT span would not be recorded or exported either
            # (parent-based and trace-id-ratio samplers decide the same way for every span of a trace).
            return _NOT_SAMPLED
        attributes: dict[str, str] = {f.ATTR_PEER_SERVICE: service}
        if query_hash is not None:
            attributes[f.ATTR_QUERY_HASH] = query_hash
        return _CurrentSpan(self.tracer, service, attributes)


_NOT_SAMPLED = nullcontext()


class _CurrentSpan:
    """`tracer.start_as_current_span(name, kind=CLIENT)` as a plain class.

    Same span, same context, same handling of an exception (recorded, status
    ERROR), without the three generator-based context managers the API nests
    for it: this runs once per dependency call.
    """

    __slots__ = ("_attributes", "_name", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, name: str, attributes: dict[str, str]) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes

    def __enter__(self) -> trace.Span:
        span = self._span = self._tracer.start_span(self._name, kind=SpanKind.CLIENT, attributes=self._attributes)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        try:
            otel_context.detach(self._token)
            if isinstance(exc, Exception) and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            span.end()


class DownstreamErrors:
    """`downstream_hooks` hook: counts failed dependency calls and marks their span as failed.

    Runs while the call's CLIENT span is still current, so an error that the tool
    handled (`call.fail(...)`, nothing raised) still shows as an error in the trace.
    """

    def __init__(self, metrics: ServerMetrics | None) -> None:
        self.metrics = metrics

    def __call__(self, service: str, query_hash: str | None, duration_ms: float, error: str | None) -> None:
        if error is None:
            return
        if self.metrics is not None:
            self.metrics.record_downstream_error(service)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(f.ATTR_DOWNSTREAM_ERROR, error)
            span.set_attribute(f.ATTR_ERROR_TYPE, error.split(":", 1)[0])
            span.set_status(Status(StatusCode.ERROR, error))
