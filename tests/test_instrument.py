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
import httpx
import pytest
from mcp import Client
from mcp.server import MCPServer
from mcp.types import Implementation
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from mcptrace.testing import subprocess_env
from tests.otel_receivers import OtelTap, attrs, oteltap, points, wait_for_log_line
from tests.user_server import serve_announced

#: How long the weather server takes to list its tools.
LISTING_SECONDS = 0.05


def weather_server() -> MCPServer[Any]:
    """A user's server: one tool with one dependency, knowing nothing about telemetry."""
    from mcp.server.mcpserver.exceptions import ToolError

    import mcptrace

    class SlowListing(MCPServer[Any]):
        """Lists its tools slowly, as a server reading a registry would: a request waits for it once."""

        async def list_tools(self) -> Any:
            await anyio.sleep(LISTING_SECONDS)
            return await super().list_tools()

    server: MCPServer[Any] = SlowListing("weather")

    @server.tool()
    async def forecast(city: str) -> str:
        async with mcptrace.downstream("weather-api", f"GET /forecast/{city}") as call:
            if city == "atlantis":
                call.fail("HTTP 404")
                raise ToolError(f"no forecast for {city}")
        return f"sunny in {city}"

    @server.tool()
    async def radar(region: str) -> dict[str, str]:
        """A tool with a span of its own, and a dependency that receives the W3C context."""
        from opentelemetry import propagate, trace

        with trace.get_tracer("weather").start_as_current_span("render radar"):
            async with mcptrace.downstream("radar-api", f"GET /radar/{region}"):
                headers: dict[str, str] = {}
                propagate.inject(headers)  # what an HTTP client sends the dependency
        return headers

    return server


def serve_configured_by_the_environment(log_path: str, ready: str) -> None:
    """What a user writes when the `OTEL_*` variables say where to export: one call."""
    import mcptrace

    server = weather_server()
    instrumentation = mcptrace.instrument(server, log_file=log_path)
    try:
        serve_announced(server.streamable_http_app(), ready)
    finally:
        instrumentation.shutdown()


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
    setup: str


@pytest.fixture(scope="module", params=["given providers", "OTEL_* variables"])
def weather(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weather]:
    workdir = tmp_path_factory.mktemp("weather")
    log, ready = workdir / "weather.log", workdir / "ready"
    with oteltap() as tap:
        env = subprocess_env()
        if request.param == "OTEL_* variables":
            env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint, "OTEL_SERVICE_NAME": "weather",
                        "OTEL_RESOURCE_ATTRIBUTES": "service.version=2.0.1,deployment.environment=test",
                        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"})
            args = ["env", str(log), str(ready)]
        else:
            args = [tap.endpoint, str(log), str(ready)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_instrument", *args],
            env=env, cwd=Path(__file__).resolve().parent.parent, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "instrumented server did not start"
                time.sleep(0.05)
            yield Weather(ready.read_text(), log, tap, request.param)
        finally:
            proc.terminate()
            proc.wait(15)


def forecasts(url: str, *cities: str, tool: str = "forecast", argument: str = "city") -> list[Any]:
    async def main() -> list[Any]:
        with anyio.fail_after(30):
            async with Client(url, mode="legacy", client_info=Implementation(name="forecaster", version="2")) as c:
                return [await c.call_tool(tool, {argument: city}) for city in cities]

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
    # The first call of a tool waited for the slow listing: the request's span holds that wait too,
    # so its child ends inside it.
    assert span.start_time_unix_nano <= client.start_time_unix_nano <= client.end_time_unix_nano
    assert client.end_time_unix_nano <= span.end_time_unix_nano
    assert span.end_time_unix_nano - span.start_time_unix_nano >= LISTING_SECONDS * 1e9

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
                                and r["event"] == "tool_call")
    lines = [r for r in records if r.get("mcp_request_id") == rid]
    assert [r["event"] for r in lines] == ["tool_call"]  # one line per request
    assert lines[0]["trace_id"] == span.trace_id.hex() and lines[0]["span_id"] == span.span_id.hex()
    # The line and the span tell one duration.
    assert lines[0]["duration_ms"] == pytest.approx((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
                                                    abs=0.01)

    assert failed.meta["mcptrace/mcp_request_id"] == failed_rid
    assert bad.status.message.endswith("no forecast for atlantis")  # a failed tool call says why, as an event too
    assert [e.name for e in bad.events] == ["exception"]


def test_spans_made_inside_a_tool_parent_under_its_request_and_the_context_goes_downstream(
    weather: Weather,
) -> None:
    (result,) = forecasts(weather.url, "north", tool="radar", argument="region")
    assert not result.is_error
    sent = result.structured_content or {}
    request = weather.tap.spans.wait_for(
        lambda s: attrs(s).get("mcptrace.mcp_request_id") == result.meta["mcptrace/mcp_request_id"])
    own = weather.tap.spans.wait_for(lambda s: s.name == "render radar" and s.trace_id == request.trace_id)
    client = weather.tap.spans.wait_for(lambda s: s.name == "radar-api" and s.trace_id == request.trace_id)
    assert own.parent_span_id == request.span_id  # the tool's own span, under the request's
    assert client.parent_span_id == own.span_id  # the dependency call, under the tool's span
    # The dependency is told the trace and the CLIENT span it was called from.
    version, trace_id, parent_id, flags = sent["traceparent"].split("-")
    assert (trace_id, parent_id) == (request.trace_id.hex(), client.span_id.hex())
    assert int(flags, 16) & 1  # sampled


def test_metrics_are_served_with_the_resource_the_variables_name(weather: Weather) -> None:
    if weather.setup != "OTEL_* variables":
        pytest.skip("a server with the application's own meter provider serves no /metrics of mcptrace's")
    forecasts(weather.url, "rome")
    scrape = httpx.get(weather.url.removesuffix("/mcp") + "/metrics", timeout=10).text
    (target,) = [line for line in scrape.splitlines() if line.startswith("target_info{")]
    assert 'service_name="weather"' in target
    assert 'service_version="2.0.1"' in target  # OTEL_RESOURCE_ATTRIBUTES wins over mcptrace's own version
    assert 'deployment_environment="test"' in target
    assert 'mcp_tool_calls_total{' in scrape and 'mcp_tool_duration_seconds_bucket{' in scrape


if __name__ == "__main__":
    if sys.argv[1] == "env":
        serve_configured_by_the_environment(*sys.argv[2:4])
    else:
        serve(*sys.argv[1:4])
