"""Exporter paths: OTLP over gRPC, and a receiver that is down (the server keeps answering)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mcptrace.testing import running_server
from tests.otel_receivers import attrs, free_port, grpc_trace_receiver


def test_spans_reach_a_grpc_receiver(tmp_path: Path) -> None:
    with grpc_trace_receiver() as (endpoint, spans):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
               "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with running_server(tmp_path, env=env) as server:

            async def main() -> Any:
                with anyio.fail_after(30):
                    async with Client(server.url, mode="legacy") as c:
                        return await c.call_tool("search_database", {"query": "anvil", "limit": 1})

            result = anyio.run(main)
            rid = result.meta["mcptrace/mcp_request_id"]
            parent = spans.wait_for(lambda s: attrs(s).get("mcptrace.mcp_request_id") == rid)
            assert parent.kind == Span.SPAN_KIND_SERVER
            child = spans.wait_for(lambda s: s.parent_span_id == parent.span_id)
            assert child.name == "sqlite" and child.kind == Span.SPAN_KIND_CLIENT


def test_a_receiver_that_is_down_costs_counted_drops_not_requests(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": dead, "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
           "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BSP_MAX_QUEUE_SIZE": "4",
           "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
           "OTEL_METRIC_EXPORT_INTERVAL": "200", "OTEL_LOGS_EXPORTER": "otlp"}
    calls = 30
    with running_server(tmp_path, env=env) as server:

        async def main() -> int:
            answered = 0
            with anyio.fail_after(60):
                async with Client(server.url, mode="legacy") as c:
                    for _ in range(calls):
                        result = await c.call_tool("ping", {})
                        answered += result.content[0].text == "pong"  # type: ignore[union-attr]
            return answered

        assert anyio.run(main) == calls
        telemetry = _wait_for_drops(server.base_url)
        assert telemetry["traces"] is True
        assert telemetry["spans_dropped"] > 0
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        assert 'mcptrace_telemetry_dropped_total{' in metrics and 'signal="traces"' in metrics
        process = server.process
    # Graceful stop on SIGTERM (uvicorn re-raises it once done), not the SIGKILL that follows a hang.
    assert process.returncode in (0, -signal.SIGTERM), "shutdown hung on an exporter that cannot deliver"


def test_a_receiver_that_never_answers_does_not_hold_up_requests(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
               "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
               "OTEL_METRIC_EXPORT_INTERVAL": "200", "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}
        with running_server(tmp_path, env=env) as server:

            async def main() -> int:
                answered = 0
                with anyio.fail_after(60):
                    async with Client(server.url, mode="legacy") as c:
                        for _ in range(10):
                            result = await c.call_tool("search_database", {"query": "anvil", "limit": 1})
                            answered += not result.is_error
                return answered

            assert anyio.run(main) == 10
            assert httpx.get(f"{server.base_url}/health", timeout=10).json()["status"] == "healthy"


def _wait_for_drops(base_url: str, timeout: float = 20) -> dict[str, Any]:
    """Drops are counted by the exporter thread once its retries give up: poll /health, bounded."""

    async def poll() -> dict[str, Any]:
        with anyio.fail_after(timeout):
            async with httpx.AsyncClient(timeout=5) as http:
                while True:
                    body = (await http.get(f"{base_url}/health")).json()
                    if body["telemetry"]["spans_dropped"] > 0:
                        return dict(body["telemetry"])
                    await anyio.sleep(0.1)

    return anyio.run(poll)
