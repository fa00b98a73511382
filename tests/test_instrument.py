"""`mcptrace.instrument(server)` on a user's own `MCPServer`, exporting to a real OTLP receiver.

The server is defined here and served by this same file in a subprocess
(`python -m tests.test_instrument ENDPOINT LOG READY`), so the providers it
installs never leak into the test process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server import MCPServer
from mcp.types import Implementation
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from mcptrace.testing import subprocess_env
from tests.otel_receivers import OtelTap, attrs, oteltap, points, wait_for_log_line
from tests.user_server import serve_announced


def weather_server() -> MCPServer[Any]:
    """A user's server: one tool with one dependency, knowing nothing about telemetry."""
    from mcp.server.mcpserver.exceptions import ToolError

    import mcptrace

    server: MCPServer[Any] = MCPServer("weather")

    @server.tool()
    async def forecast(city: str) -> str:
        async with mcptrace.downstream("weather-api", f"GET /forecast/{city}") as call:
            if city == "atlantis":
                call.fail("HTTP 404")
                raise ToolError(f"no forecast for {city}")
        return f"sunny in {city}"

    return server


def serve(endpoint: str, log_path: str, ready: str) -> None:
    """What a user writes: providers, one `instrument()` call, then serve as usual."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import mcptrace

    resource = Resource.create({"service.name": "weather"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), schedule_delay_millis=100))
    meter_provider = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"), export_interval_millis=300)])
    server = weather_server()
    mcptrace.instrument(server, tracer_provider=tracer_provider, meter_provider=meter_provider,
                        logger=mcptrace.EventLogger(mcptrace.LogSink(log_path)))

    try:
        serve_announced(server.streamable_http_app(), ready)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


@dataclass
class Weather:
    url: str
    log: Path
    tap: OtelTap


@pytest.fixture(scope="module")
def weather(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weather]:
    workdir = tmp_path_factory.mktemp("weather")
    log, ready = workdir / "weather.log", workdir / "ready"
    with oteltap() as tap:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_instrument", tap.endpoint, str(log), str(ready)],
            env=subprocess_env(), cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "instrumented server did not start"
                time.sleep(0.05)
            yield Weather(ready.read_text(), log, tap)
        finally:
            proc.terminate()
            proc.wait(15)


def forecasts(url: str, *cities: str) -> list[Any]:
    async def main() -> list[Any]:
        with anyio.fail_after(30):
            async with Client(url, mode="legacy", client_info=Implementation(name="forecaster", version="2")) as c:
                return [await c.call_tool("forecast", {"city": city}) for city in cities]

    return anyio.run(main)


def test_instrumented_server_gets_request_ids_spans_metrics_and_correlated_logs(weather: Weather) -> None:
    ok, also_ok, failed = forecasts(weather.url, "paris", "oslo", "atlantis")
    assert not ok.is_error and not also_ok.is_error and failed.is_error
    rid = ok.meta["mcptrace/mcp_request_id"]
    failed_rid = failed.meta["mcptrace/mcp_request_id"]

    span = weather.tap.spans.wait_for(lambda s: attrs(s).get("mcptrace.mcp_request_id") == rid)
    assert span.kind == Span.SPAN_KIND_SERVER and span.name == "tools/call forecast"
    assert attrs(span)["mcptrace.caller_id"] == "forecaster"
    client = weather.tap.spans.wait_for(lambda s: s.parent_span_id == span.span_id)
    assert client.name == "weather-api" and client.kind == Span.SPAN_KIND_CLIENT

    bad = weather.tap.spans.wait_for(lambda s: attrs(s).get("mcptrace.mcp_request_id") == failed_rid)
    assert bad.status.code == Status.STATUS_CODE_ERROR
    bad_client = weather.tap.spans.wait_for(lambda s: s.parent_span_id == bad.span_id)
    assert bad_client.status.code == Status.STATUS_CODE_ERROR

    def counted(name: str, labels: dict[str, str], value: int) -> Any:
        return lambda m: m.name == name and any(
            all(attrs(p).get(k) == v for k, v in labels.items()) and p.as_int == value for p in points(m))

    weather.tap.metrics.wait_for(counted("mcp_tool_calls_total", {"tool": "forecast", "status": "success"}, 2))
    weather.tap.metrics.wait_for(counted("mcp_tool_calls_total", {"tool": "forecast", "status": "error"}, 1))
    weather.tap.metrics.wait_for(counted("mcp_downstream_errors_total", {"service": "weather-api"}, 1))
    weather.tap.metrics.wait_for(lambda m: m.name == "mcp.server.operation.duration")
    # The client's session ended as it left: its lifetime is a semantic-convention histogram.
    weather.tap.metrics.wait_for(lambda m: m.name == "mcp.server.session.duration" and any(
        attrs(p).get("network.transport") == "tcp" and p.count >= 1 and p.sum > 0 for p in points(m)))

    records = wait_for_log_line(weather.log, lambda r: r.get("mcp_request_id") == rid
                                and r["event"] == "response_sent")
    lines = [r for r in records if r.get("mcp_request_id") == rid]
    assert {r["event"] for r in lines} >= {"request_received", "tool_call", "response_sent"}
    assert {r["trace_id"] for r in lines} == {span.trace_id.hex()}


if __name__ == "__main__":
    serve(*sys.argv[1:4])
