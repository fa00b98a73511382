"""OpenTelemetry from the real `mcptrace serve` into a real OTLP receiver (oteltap), and `/metrics`."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from mcptrace.testing import RunningProcess, running_server, running_upstream, subprocess_env
from tests.otel_receivers import OtelTap, attrs, hex_id, oteltap, points, wait_for_log_line

REQUEST_ID = "mcptrace.mcp_request_id"


@pytest.fixture(scope="module")
def tap() -> Iterator[OtelTap]:
    with oteltap() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def own_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    with running_upstream(tmp_path_factory.mktemp("otel-upstream")) as proc:
        yield proc


def switch_upstream(upstream: RunningProcess, *, down: bool) -> None:
    httpx.post(f"{upstream.base_url}/admin/faults", json={"down": down}, timeout=5).raise_for_status()


def otel_env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "mcptrace-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300", "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_BLRP_SCHEDULE_DELAY": "100", **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tap: OtelTap, own_upstream: RunningProcess,
           ) -> Iterator[RunningProcess]:
    with running_server(tmp_path_factory.mktemp("otel-server"), "--upstream-url", own_upstream.base_url,
                        env=otel_env(tap.endpoint)) as proc:
        yield proc


async def _call(url: str, tool: str, arguments: dict[str, Any], *, meta: dict[str, Any] | None = None,
                http: httpx2.AsyncClient | None = None, mode: str = "legacy") -> Any:
    with anyio.fail_after(30):
        target: Any = streamable_http_client(url, http_client=http) if http is not None else url
        async with Client(target, mode=mode, client_info=Implementation(name="otel-test", version="1")) as c:
            return await c.call_tool(tool, arguments, meta=meta)


def call(url: str, tool: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    return anyio.run(lambda: _call(url, tool, arguments or {}, **kwargs))


def request_id(result: Any) -> str:
    rid = result.meta["mcptrace/mcp_request_id"]
    assert isinstance(rid, str)
    return rid


def server_span(tap: OtelTap, rid: str) -> Span:
    return tap.spans.wait_for(lambda s: s.kind == Span.SPAN_KIND_SERVER and attrs(s).get(REQUEST_ID) == rid)


def test_request_span_carries_request_id_caller_tenant_and_tool(server: RunningProcess, tap: OtelTap) -> None:
    result = call(server.url, "search_database", {"query": "anvil", "limit": 2})
    span = server_span(tap, request_id(result))
    a = attrs(span)
    assert span.name == "tools/call search_database"
    assert a["gen_ai.tool.name"] == "search_database"
    assert a["mcptrace.caller_id"] == "otel-test"
    assert a["mcptrace.tenant"]
    assert a["mcp.method.name"] == "tools/call"
    assert a["mcp.session.id"]
    assert span.status.code != Status.STATUS_CODE_ERROR


def test_each_downstream_call_is_a_client_span_under_the_request_span(
    server: RunningProcess, tap: OtelTap,
) -> None:
    result = call(server.url, "fetch_upstream", {"key": "k7"})
    assert not result.is_error, result.content
    parent = server_span(tap, request_id(result))
    child = tap.spans.wait_for(lambda s: s.parent_span_id == parent.span_id and s.name == "upstream")
    assert child.kind == Span.SPAN_KIND_CLIENT
    assert child.trace_id == parent.trace_id
    assert attrs(child)["peer.service"] == "upstream"
    assert attrs(child)["mcptrace.query_hash"]
    assert parent.start_time_unix_nano <= child.start_time_unix_nano <= child.end_time_unix_nano
    assert child.end_time_unix_nano <= parent.end_time_unix_nano


def test_a_failing_dependency_marks_both_spans_as_errors(server: RunningProcess, tap: OtelTap,
                                                         own_upstream: RunningProcess) -> None:
    switch_upstream(own_upstream, down=True)
    try:
        result = call(server.url, "fetch_upstream", {"key": "k8"})
    finally:
        switch_upstream(own_upstream, down=False)
    assert result.is_error
    parent = server_span(tap, request_id(result))
    assert parent.status.code == Status.STATUS_CODE_ERROR
    assert "503" in parent.status.message  # what the tool answered, not an empty status
    assert attrs(parent)["error.type"] == "tool_error"
    (event,) = [e for e in parent.events if e.name == "exception"]
    assert "503" in attrs(event)["exception.message"]
    child = tap.spans.wait_for(lambda s: s.parent_span_id == parent.span_id and s.name == "upstream")
    assert child.status.code == Status.STATUS_CODE_ERROR
    assert "503" in attrs(child)["mcptrace.downstream.error"]
    assert any(e.name == "exception" for e in child.events)


def test_an_unknown_tool_is_an_error_span(server: RunningProcess, tap: OtelTap) -> None:
    result = call(server.url, "no_such_tool", {})
    assert result.is_error
    span = server_span(tap, request_id(result))
    assert span.status.code == Status.STATUS_CODE_ERROR


def test_a_traceparent_in_meta_makes_the_server_span_its_child(server: RunningProcess, tap: OtelTap) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    result = call(server.url, "ping", meta={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    span = server_span(tap, request_id(result))
    assert hex_id(span.trace_id) == trace_id
    assert hex_id(span.parent_span_id) == parent_id


@pytest.mark.parametrize("mode", ["auto", "2026-07-28"])
def test_sessionless_spans_carry_the_same_attributes_without_a_session_and_continue_the_client_trace(
    server: RunningProcess, tap: OtelTap, mode: str,
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    result = call(server.url, "search_database", {"query": "anvil", "limit": 2}, mode=mode,
                  meta={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    span = server_span(tap, request_id(result))
    a = attrs(span)
    assert a["mcp.protocol.version"] == "2026-07-28"
    assert a["gen_ai.tool.name"] == "search_database"
    assert a["mcptrace.caller_id"] == "otel-test"
    assert a["mcptrace.tenant"]
    assert "mcp.session.id" not in a
    assert hex_id(span.trace_id) == trace_id
    assert hex_id(span.parent_span_id) == parent_id


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_traceparent_http_header_makes_the_server_span_its_child(
    server: RunningProcess, tap: OtelTap, mode: str,
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)

    async def main() -> Any:
        headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            return await _call(server.url, "ping", {}, http=http, mode=mode)

    result = anyio.run(main)
    span = server_span(tap, request_id(result))
    assert hex_id(span.trace_id) == trace_id
    assert hex_id(span.parent_span_id) == parent_id


def test_a_malformed_traceparent_header_starts_a_fresh_trace(server: RunningProcess, tap: OtelTap) -> None:
    async def main() -> Any:
        async with httpx2.AsyncClient(headers={"traceparent": "00-not-a-trace-context"}, timeout=30) as http:
            return await _call(server.url, "ping", {}, http=http)

    result = anyio.run(main)
    assert not result.is_error
    span = server_span(tap, request_id(result))
    assert span.parent_span_id == b"" and len(span.trace_id) == 16


def test_log_lines_carry_the_trace_and_span_of_their_request(server: RunningProcess, tap: OtelTap) -> None:
    result = call(server.url, "search_database", {"query": "rocket", "limit": 1})
    rid = request_id(result)
    span = server_span(tap, rid)
    records = wait_for_log_line(server.log_file, lambda r: r.get("mcp_request_id") == rid
                                and r["event"] == "tool_call")
    mine = [r for r in records if r.get("mcp_request_id") == rid]
    assert sorted(r["event"] for r in mine) == ["downstream_call", "tool_call"]  # one line, and the dependency's
    assert {r["trace_id"] for r in mine} == {hex_id(span.trace_id)}
    assert {r["span_id"] for r in mine if r["event"] == "tool_call"} == {hex_id(span.span_id)}
    downstream_line = next(r for r in mine if r["event"] == "downstream_call")
    client = tap.spans.wait_for(lambda s: s.parent_span_id == span.span_id and s.name == "sqlite")
    assert downstream_line["span_id"] == hex_id(client.span_id)


def test_log_lines_are_also_exported_over_otlp(server: RunningProcess, tap: OtelTap) -> None:
    result = call(server.url, "ping")
    rid = request_id(result)
    record = tap.logs.wait_for(
        lambda r: attrs(r).get("mcp_request_id") == rid and r.body.string_value == "tool_call")
    span = server_span(tap, rid)
    assert record.trace_id == span.trace_id
    assert attrs(record)["tool_name"] == "ping"


def _tool_calls_point(tool: str, status: str, value: float) -> Any:
    def match(metric: Any) -> bool:
        return metric.name == "mcp_tool_calls_total" and any(
            attrs(p).get("tool") == tool and attrs(p).get("status") == status and p.as_int == value
            for p in points(metric))
    return match


def test_metrics_arrive_over_otlp_with_names_labels_and_counts(server: RunningProcess, tap: OtelTap) -> None:
    for _ in range(3):
        assert not call(server.url, "get_config", {}).is_error
    assert call(server.url, "get_config", {"key": "no-such-key"}).is_error
    tap.metrics.wait_for(_tool_calls_point("get_config", "success", 3))
    tap.metrics.wait_for(_tool_calls_point("get_config", "error", 1))
    duration = tap.metrics.wait_for(lambda m: m.name == "mcp_tool_duration_seconds" and any(
        attrs(p).get("tool") == "get_config" and attrs(p).get("status") == "success" and p.count == 3
        for p in points(m)))
    point = next(p for p in points(duration) if attrs(p).get("tool") == "get_config"
                 and attrs(p).get("status") == "success")
    assert list(point.explicit_bounds)[:3] == [0.001, 0.0025, 0.005] and point.explicit_bounds[-1] >= 300
    tap.metrics.wait_for(lambda m: m.name == "mcp.server.operation.duration" and any(
        attrs(p).get("gen_ai.tool.name") == "get_config" and attrs(p).get("error.type") == "tool_error"
        for p in points(m)))
    tap.metrics.wait_for(lambda m: m.name == "mcp_active_sessions")


def scrape(server: RunningProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope")))
            samples[(sample.name, labels)] = sample.value
    return samples


def test_prometheus_endpoint_counts_match_the_calls_made(
    server: RunningProcess, own_upstream: RunningProcess,
) -> None:
    ping = ("mcp_tool_calls_total", (("status", "success"), ("tool", "ping")))
    hist = ("mcp_tool_duration_seconds_count", (("status", "success"), ("tool", "ping")))
    errors = ("mcp_downstream_errors_total", (("service", "upstream"),))
    before = scrape(server)

    async def calls() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with anyio.fail_after(30):
            async with Client(server.url, mode="legacy") as c:
                for _ in range(5):
                    assert not (await c.call_tool("ping", {})).is_error
                return await anyio.to_thread.run_sync(scrape, server)

    during = anyio.run(calls)
    switch_upstream(own_upstream, down=True)
    try:
        assert call(server.url, "fetch_upstream", {"key": "k9"}).is_error
    finally:
        switch_upstream(own_upstream, down=False)
    after = scrape(server)
    assert after[ping] - before.get(ping, 0) == 5
    assert after[hist] - before.get(hist, 0) == 5
    assert after[errors] - before.get(errors, 0) == 1
    buckets = [le for (name, labels), _ in after.items() if name == "mcp_tool_duration_seconds_bucket"
               and ("tool", "ping") in labels for k, le in labels if k == "le"]
    assert "0.001" in buckets and "600.0" in buckets
    assert during[("mcp_active_sessions", ())] >= 1  # this test's session, open while scraped



def scrape_until(server: RunningProcess, done: Any, timeout: float = 5.0
                 ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape until `done(samples)`: the server ends a session just after answering the client's DELETE."""
    deadline = time.monotonic() + timeout
    while not done(samples := scrape(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return samples


SESSION_COUNT = ("mcp_server_session_duration_seconds_count", (("network_transport", "tcp"),))
SESSION_SUM = ("mcp_server_session_duration_seconds_sum", (("network_transport", "tcp"),))


def test_a_closed_session_records_how_long_it_lived(server: RunningProcess) -> None:
    before = scrape(server)

    async def session() -> None:
        with anyio.fail_after(30):
            async with Client(server.url, mode="legacy") as c:
                assert not (await c.call_tool("ping", {})).is_error
                await anyio.sleep(0.5)  # the client's DELETE ends the session on the way out

    anyio.run(session)
    after = scrape_until(server, lambda now: now.get(SESSION_COUNT, 0) > before.get(SESSION_COUNT, 0))
    assert after[SESSION_COUNT] - before.get(SESSION_COUNT, 0) == 1
    assert after[SESSION_SUM] - before.get(SESSION_SUM, 0) >= 0.5


def test_sessionless_calls_record_no_session(server: RunningProcess) -> None:
    before = scrape(server)
    assert not call(server.url, "ping", mode="auto").is_error  # the 2026-07-28 wire: no session at all
    after = scrape(server)
    assert after.get(SESSION_COUNT, 0) == before.get(SESSION_COUNT, 0)


def test_a_stdio_connection_is_one_session_recorded_as_the_pipe_closes(
    tmp_path: Path, tap: OtelTap,
) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcptrace", "serve", "--stdio", "--data-dir", str(tmp_path)],
        env={**subprocess_env(), **otel_env(tap.endpoint)},
    )

    async def session() -> None:
        with anyio.fail_after(30):
            async with Client(params, mode="legacy") as c:
                assert not (await c.call_tool("ping", {})).is_error
                await anyio.sleep(0.5)

    anyio.run(session)
    tap.metrics.wait_for(lambda m: m.name == "mcp.server.session.duration" and any(
        attrs(p).get("network.transport") == "pipe" and p.count == 1 and p.sum >= 0.5 for p in points(m)))


CHECKLIST_METRICS = {"mcp_tool_calls_total", "mcp_tool_duration_seconds", "mcp_active_sessions",
                     "mcp_downstream_errors_total"}


def test_metric_names_follow_one_scheme_and_known_counters_start_at_zero(tmp_path: Path) -> None:
    with running_server(tmp_path, env=otel_env("http://127.0.0.1:9")) as fresh:  # nothing called yet
        samples = scrape(fresh)
        families = {name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for name, _ in samples}
    for name in families - {"target_info"}:
        assert (name in CHECKLIST_METRICS or name.startswith("mcp_server_")  # the semantic conventions'
                or name.startswith("mcptrace_")), name
    assert samples[("mcp_downstream_errors_total", (("service", "sqlite"),))] == 0
    assert samples[("mcp_downstream_errors_total", (("service", "upstream"),))] == 0
    assert samples[("mcptrace_telemetry_dropped_total", (("reason", "queue_full"), ("signal", "traces")))] == 0
    (target,) = [labels for name, labels in samples if name == "target_info"]
    assert ("service_name", "mcptrace-under-test") in target
