"""Spans exported through a child process (`MCPTRACE_SPAN_EXPORT=process`) into a real oteltap receiver."""

from __future__ import annotations

import fcntl
import io
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

import mcptrace
from mcptrace import ConfigError
from mcptrace.telemetry._otlp import Providers, make_resource, providers_from_env
from mcptrace.telemetry._spanprocess import ProcessSpanExporter
from mcptrace.telemetry._spanwire import Batch, Rebuilder, frame, read_frame, span_row
from mcptrace.testing import RunningProcess, running_server, subprocess_env
from tests.otel_receivers import OtelTap, attrs, free_port, oteltap

REQUEST_ID = "mcptrace.mcp_request_id"


def until(condition: Callable[[], Any], *, timeout: float = 20, what: str = "condition") -> Any:
    """Poll a condition that has no event to await (another process's state), bounded."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)
    return value


def children_of(pid: int) -> list[int]:
    """Running child processes of `pid`, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue  # a thread that ended meanwhile
    return [p for p in found if is_running(p)]


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def finished_spans(resource: Resource | None = None) -> list[Any]:
    """A request span with an event, a failing child span linked to it, and a sibling with odd values."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource or make_resource())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("spec", "1.2")
    with tracer.start_as_current_span("request", kind=SpanKind.SERVER,
                                      attributes={"n": 1, "tags": ("a", "b"), "ok": True}) as request:
        request.add_event("received", {"bytes": 12.5})
        with tracer.start_as_current_span("db", kind=SpanKind.CLIENT,
                                          links=[Link(request.get_span_context(), {"why": "retry"})]) as db:
            db.set_status(StatusCode.ERROR, "timeout")
        with provider.get_tracer("other").start_as_current_span("empty", attributes={"": None}):
            pass
    return list(memory.get_finished_spans())


def span_rows(spans: list[Any], sent: dict[int, Any]) -> tuple[Any, ...]:
    """One message of finished spans, read through their public properties."""
    batch = Batch(sent)
    batch.rows.extend(row for span in spans if (row := span_row(span, batch)) is not None)
    return batch.message()


# -- the wire format -------------------------------------------------------------

def test_the_child_rebuilds_spans_that_encode_to_the_same_otlp_bytes() -> None:
    spans, sent = finished_spans(), {}
    stream = io.BytesIO(frame(span_rows(spans, sent)) + frame(span_rows(spans[::-1], sent)))
    rebuilder = Rebuilder()
    first, second = rebuilder.spans(read_frame(stream) or ()), rebuilder.spans(read_frame(stream) or ())
    assert read_frame(stream) is None
    assert encode_spans(first).SerializeToString() == encode_spans(spans).SerializeToString()
    assert encode_spans(second).SerializeToString() == encode_spans(spans[::-1]).SerializeToString()


def test_a_resource_goes_to_the_child_once_and_each_span_keeps_its_own() -> None:
    spans, sent = finished_spans(), {}
    assert len(span_rows(spans, sent)[1]) == 1
    assert span_rows(spans, sent)[1] == []
    other = finished_spans(Resource.create({"service.name": "other"}))
    mixed = [spans[0], other[0], spans[1]]
    message = span_rows(mixed, sent)
    assert len(message[1]) == 1
    rebuilder = Rebuilder()
    rebuilder.spans(span_rows(spans, {}))  # a fresh child learns the first resource first
    rebuilt = rebuilder.spans(message)
    assert [s.resource.attributes["service.name"] for s in rebuilt] == ["mcptrace", "other", "mcptrace"]
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(mixed).SerializeToString()


def test_a_truncated_frame_is_an_error_not_a_partial_batch() -> None:
    data = frame(span_rows(finished_spans(), {}))
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(data[:-3]))


# -- the exporter in this process, the child and the receiver real ----------------

def test_spans_arrive_through_the_child_with_their_parents_and_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    with oteltap() as tap:
        monkeypatch.setenv("OTEL_SERVICE_NAME", "through-a-child")
        providers = providers_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint,
                                        "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRICS_EXPORTER": "none"})
        assert providers.tracer_provider is not None
        tracer = providers.tracer_provider.get_tracer("spec", "1.2")
        with (tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes={"tool": "ping"}) as req,
              tracer.start_as_current_span("db", kind=SpanKind.CLIENT) as db):
            db.set_status(StatusCode.ERROR, "timeout")
        exporter = _process_exporter(providers)
        try:
            parent = tap.spans.wait_for(lambda s: s.name == "request")
            child = tap.spans.wait_for(lambda s: s.name == "db")
            assert exporter.child_pid is not None and exporter.child_pid in children_of(os.getpid())
        finally:
            providers.shutdown()
    assert parent.span_id == req.get_span_context().span_id.to_bytes(8, "big")
    assert child.parent_span_id == parent.span_id and child.trace_id == parent.trace_id
    assert parent.kind == Span.SPAN_KIND_SERVER and child.kind == Span.SPAN_KIND_CLIENT
    assert attrs(parent) == {"tool": "ping"}
    assert child.status.code == Status.STATUS_CODE_ERROR and child.status.message == "timeout"
    assert providers.drops.snapshot() == {}


def test_a_users_own_tracer_provider_exports_through_the_public_exporter() -> None:
    with oteltap() as tap:
        provider = TracerProvider(resource=Resource.create({"service.name": "weather"}))
        exporter = mcptrace.ProcessSpanExporter(env={"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint})
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
        try:
            with provider.get_tracer("weather").start_as_current_span("forecast"):
                pass
            tap.spans.wait_for(lambda s: s.name == "forecast")
        finally:
            provider.shutdown()
    assert exporter.drops.snapshot() == {}


def test_shutdown_delivers_every_queued_span_and_the_child_exits() -> None:
    with oteltap() as tap:
        providers = providers_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint,
                                        "OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_METRICS_EXPORTER": "none"})
        assert providers.tracer_provider is not None
        tracer = providers.tracer_provider.get_tracer("spec")
        for i in range(300):  # a few full batches go out at once; the rest waits in the queue
            with tracer.start_as_current_span(f"queued-{i}"):
                pass
        exporter = _process_exporter(providers)
        pid = until(lambda: exporter.child_pid, what="a child")
        providers.shutdown(timeout=15)
        assert not is_running(pid)
        until(lambda: len(tap.spans.items) >= 300, timeout=5, what="every span at the receiver")
    assert sorted(s.name for s in tap.spans.items) == sorted(f"queued-{i}" for i in range(300))
    assert providers.drops.snapshot() == {}


def test_spans_a_receiver_that_is_down_refuses_are_counted_as_failed_exports() -> None:
    exporter = ProcessSpanExporter(env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    spans = finished_spans()
    try:
        for _ in range(3):
            assert exporter.export(spans).name == "SUCCESS"  # handed over; the child finds out
        assert exporter.force_flush(20_000)
    finally:
        exporter.shutdown()
    assert exporter.drops.snapshot() == {("traces", "export_failed"): 3 * len(spans)}


def test_a_child_that_keeps_dying_is_restarted_at_a_bounded_rate_and_every_span_is_accounted_for() -> None:
    exporter = ProcessSpanExporter(protocol="carrier-pigeon")  # the child refuses it and exits at once
    spans, refused, batches = finished_spans(), 0, 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            batches += 1
            refused += len(spans) * (exporter.export(spans).name == "FAILURE")
            time.sleep(0.01)  # pacing: an export every 10 ms, as a busy batch thread would
    finally:
        exporter.shutdown()
    assert exporter.restarts <= 3  # after 0.2, 0.6 and 1.4 s: the backoff doubles
    assert refused + exporter.drops.total("traces") == batches * len(spans)


def test_an_unknown_export_mode_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="MCPTRACE_SPAN_EXPORT"):
        providers_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                            "MCPTRACE_SPAN_EXPORT": "fork"})


def test_serve_refuses_an_unknown_export_mode_without_a_traceback(tmp_path: Path) -> None:
    env = subprocess_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "MCPTRACE_SPAN_EXPORT": "fork"})
    proc = subprocess.run(
        [sys.executable, "-m", "mcptrace", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "MCPTRACE_SPAN_EXPORT='fork'" in proc.stderr and "Traceback" not in proc.stderr


def test_thread_mode_keeps_the_exporter_in_the_server_process() -> None:
    providers = providers_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, span_export="thread")
    try:
        assert providers.tracer_provider is not None
        assert type(providers.span_exporter).__name__ == "OTLPSpanExporter"
    finally:
        providers.shutdown()


def _process_exporter(providers: Providers) -> ProcessSpanExporter:
    exporter = providers.span_exporter
    assert isinstance(exporter, ProcessSpanExporter)
    return exporter


# -- a child whose server dies ------------------------------------------------------

def orphan_parent(endpoint: str) -> None:
    """Export one batch through a child, print the child's pid, then die without any cleanup."""
    exporter = ProcessSpanExporter(env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    exporter.export(finished_spans())
    assert exporter.force_flush(20_000)
    print(exporter.child_pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_child_exits_by_itself_when_its_server_dies() -> None:
    with oteltap() as tap:
        proc = subprocess.run([sys.executable, "-m", "tests.test_span_process", tap.endpoint],
                              env=subprocess_env(), cwd=Path(__file__).resolve().parent.parent,
                              capture_output=True, timeout=60, check=False)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        child = int(proc.stdout.split()[0])
        tap.spans.wait_for(lambda s: s.name == "request")
        until(lambda: not is_running(child), timeout=15, what="the orphaned child's exit")


# -- the real server ----------------------------------------------------------------

@pytest.fixture
def tap() -> Iterator[OtelTap]:
    with oteltap() as receiver:
        yield receiver


def _pings(url: str, n: int) -> list[str]:
    """`n` pings; returns their request ids (each answered, or the test fails)."""

    async def main() -> list[str]:
        ids = []
        with anyio.fail_after(60):
            async with Client(url, mode="legacy") as c:
                for _ in range(n):
                    result = await c.call_tool("ping", {})
                    assert not result.is_error
                    ids.append(result.meta["mcptrace/mcp_request_id"])
        return ids

    return anyio.run(main)


def _health(server: RunningProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{server.base_url}/health", timeout=10).json()["telemetry"])


def _pipe_pending(pid: int) -> int:
    """Bytes written to a process's stdin pipe and not read yet."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder)
    finally:
        os.close(fd)


def _span_of(tap: OtelTap, rid: str) -> Span:
    return tap.spans.wait_for(lambda s: s.kind == Span.SPAN_KIND_SERVER and attrs(s).get(REQUEST_ID) == rid)


def test_a_receiver_that_is_down_costs_counted_failed_exports_and_no_latency(tmp_path: Path) -> None:
    # Batches a second apart, so a few 5-second export attempts cover every span.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
           "OTEL_BSP_SCHEDULE_DELAY": "1000", "OTEL_METRICS_EXPORTER": "none"}
    with running_server(tmp_path, env=env) as server:

        async def main() -> list[float]:
            took = []
            with anyio.fail_after(60):
                async with Client(server.url, mode="legacy") as c:
                    await c.call_tool("ping", {})  # the client's own first-call imports are not the server's latency
                    for _ in range(30):
                        start = time.monotonic()
                        assert not (await c.call_tool("ping", {})).is_error
                        took.append(time.monotonic() - start)
            return took

        took = anyio.run(main)
        until(lambda: _health(server)["spans_dropped"] >= 31, timeout=30, what="every span counted")
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    # Coarse: no call waited for the exporter, whose every attempt takes up to its 5 s timeout.
    assert max(took) < 2.5
    assert 'reason="export_failed"' in metrics and 'signal="traces"' in metrics


def test_a_killed_child_costs_counted_spans_and_a_new_child_takes_over(tmp_path: Path, tap: OtelTap) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_METRICS_EXPORTER": "none"}
    with running_server(tmp_path, env=env) as server:
        _span_of(tap, _pings(server.url, 1)[0])
        (child,) = until(lambda: children_of(server.process.pid), what="the export child")
        os.kill(child, signal.SIGSTOP)  # it reads nothing more: what is written now stays in the pipe
        _pings(server.url, 5)
        until(lambda: _pipe_pending(child) > 0, what="spans written to the stopped child")
        os.kill(child, signal.SIGKILL)
        until(lambda: _health(server)["spans_dropped"] >= 5, what="the loss counted")

        # A new child starts at the first export after a short backoff; exports before it are counted.
        (new_child,) = until(lambda: _pings(server.url, 2) and children_of(server.process.pid),
                             what="a new export child")
        assert new_child != child
        for rid in _pings(server.url, 3):
            _span_of(tap, rid)


if __name__ == "__main__":
    orphan_parent(sys.argv[1])


def test_a_request_record_becomes_its_server_span_and_a_client_span_per_dependency() -> None:
    from mcptrace.telemetry._context import CallContext
    from mcptrace.telemetry._spanwire import add_items

    call = CallContext("req-1", "tools/call", "s-1", "7", "search", "agent-7", "acme")
    call.transport, call.protocol_version = "http", "2025-11-25"
    call.trace_id, call.span_id, call.parent_span_id, call.parent_remote = 0xABC, 0x11, 0x22, True
    call.sampled, call.start_ns, call.duration_s = True, 1_000_000_000, 0.25
    call.status, call.error, call.error_type = "error", "database unavailable", "tool_error"
    call.client_spans = [(0x33, 0x11, "sqlite", "q1", 1_010_000_000, 1_020_000_000, "timeout", None)]
    batch = Batch({})
    assert add_items(batch, [call], make_resource()) == 2
    server, client = Rebuilder().spans(batch.message())
    assert (server.name, server.kind, server.context.span_id) == ("tools/call search", SpanKind.SERVER, 0x11)
    assert server.parent is not None and server.parent.span_id == 0x22 and server.parent.is_remote
    assert server.end_time == 1_250_000_000
    assert dict(server.attributes) == {
        "mcp.method.name": "tools/call", "mcp.protocol.version": "2025-11-25", "jsonrpc.request.id": "7",
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search", "network.transport": "tcp",
        "mcptrace.mcp_request_id": "req-1", "mcptrace.caller_id": "agent-7", "mcptrace.tenant": "acme",
        "mcp.session.id": "s-1", "error.type": "tool_error"}
    assert server.status.status_code is StatusCode.ERROR and server.status.description == "database unavailable"
    (event,) = server.events
    assert event.name == "exception" and event.attributes["exception.message"] == "database unavailable"
    assert (client.name, client.kind, client.parent.span_id if client.parent else None) == ("sqlite", SpanKind.CLIENT,
                                                                                           0x11)
    assert client.context.trace_id == 0xABC and client.status.description == "timeout"
    assert client.attributes["mcptrace.downstream.error"] == "timeout"
    encode_spans([server, client]).SerializeToString()  # the SDK's encoder takes them as they are
