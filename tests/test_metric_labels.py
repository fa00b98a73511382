"""Metrics a dashboard and alerts can rely on: bounded labels, counters from zero, loops seen as they happen.

The loop watch and the label sets are tested alone with a fake clock; the real
server then shows them on `/metrics` under calls from the official SDK client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from mcp.types import Implementation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

from mcptrace import _fields as f
from mcptrace.telemetry._labels import FirstSeen, RegisteredTools
from mcptrace.telemetry._metrics import REFUSAL_REASONS, ServerMetrics
from mcptrace.telemetry._prometheus import PrometheusEndpoint
from mcptrace.telemetry._repeats import RepeatWatch
from mcptrace.testing import RunningProcess, initialize_message, running_server
from tests.helpers import UNLIMITED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the loop watch ---------------------------------------------------------------------------------

def test_a_repeat_is_suspected_from_the_threshold_th_identical_call_within_the_window() -> None:
    clock = Clock()
    watch = RepeatWatch(threshold=5, window=10.0, clock=clock)
    call = ("agent", "search", "args", "answer")
    seen = []
    for _ in range(8):
        seen.append(watch.seen(call))
        clock.now += 1.0
    assert seen == [False] * 4 + [True] * 4


def test_another_answer_another_caller_or_a_slow_pace_is_no_loop() -> None:
    clock = Clock()
    watch = RepeatWatch(threshold=3, window=10.0, clock=clock)
    # a poll whose answer changes every time
    assert not any(watch.seen(("agent", "status", "args", f"answer-{i}")) for i in range(10))
    # the same call from ten callers
    assert not any(watch.seen((f"agent-{i}", "search", "args", "answer")) for i in range(10))
    # a probe once every 6 s: never three within 10 s
    probe = []
    for _ in range(10):
        probe.append(watch.seen(("probe", "ping", "args", "pong")))
        clock.now += 6.0
    assert not any(probe)


def test_a_window_that_ends_starts_the_count_again() -> None:
    clock = Clock()
    watch = RepeatWatch(threshold=3, window=10.0, clock=clock)
    call = ("agent", "search", "args", "answer")
    assert [watch.seen(call) for _ in range(3)] == [False, False, True]
    clock.now += 10.5
    assert [watch.seen(call) for _ in range(3)] == [False, False, True]


def test_memory_is_bounded_and_the_least_recently_repeated_call_is_forgotten_first() -> None:
    watch = RepeatWatch(threshold=3, window=10.0, max_keys=100, clock=Clock())
    loop = ("agent", "search", "args", "answer")
    watch.seen(loop)
    for i in range(1000):
        if i % 50 == 0:
            watch.seen(loop)  # the loop keeps being recent
        watch.seen(("agent", "search", f"args-{i}", "answer"))
        assert len(watch) <= 100
    assert watch.seen(loop)  # its count survived the flood of distinct calls


@pytest.mark.parametrize(("threshold", "window", "max_keys"), [(1, 10.0, 10), (3, 0.0, 10), (3, 10.0, 0)])
def test_a_watch_that_could_not_work_is_refused(threshold: int, window: float, max_keys: int) -> None:
    with pytest.raises(ValueError):
        RepeatWatch(threshold=threshold, window=window, max_keys=max_keys)


# -- label sets -------------------------------------------------------------------------------------

def test_the_first_callers_keep_their_name_and_the_rest_are_unknown() -> None:
    label = FirstSeen(2)
    assert [label(c) for c in ("a", "b", "c", "a", None)] == ["a", "b", f.UNKNOWN_LABEL, "a", f.UNKNOWN_LABEL]


def test_tools_are_labelled_by_the_registered_names_read_again_at_most_once_a_second() -> None:
    clock = Clock()
    registered = ["search"]
    listings = []

    async def names() -> list[str]:
        listings.append(clock.now)
        return list(registered)

    async def main() -> None:
        tools = RegisteredTools(names, refresh_seconds=1.0, clock=clock)
        assert tools.unseen("search")
        await tools.refresh()
        assert tools.label("search") == "search" and not tools.unseen("search")
        for i in range(100):  # a client inventing names within a second: no listing more
            made_up = f"made-up-{i}"
            if tools.unseen(made_up):
                await tools.refresh()
            assert tools.label(made_up) == f.UNKNOWN_LABEL
        assert len(listings) == 1
        registered.append("fetch")  # a tool added while serving
        clock.now += 1.5
        await tools.refresh()
        assert tools.label("fetch") == "fetch"
        assert len(listings) == 2

    anyio.run(main)


# -- the instruments, read as Prometheus reads them ------------------------------------------------

def samples(endpoint: PrometheusEndpoint, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(endpoint.render().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope")))] = s.value
    return out


def test_counters_start_at_zero_so_that_rate_sees_their_first_increase() -> None:
    endpoint = PrometheusEndpoint()
    provider = MeterProvider(metric_readers=[endpoint.reader])
    metrics = ServerMetrics(provider.get_meter("test"))
    metrics.start_tool_series(["search", "fetch"])
    metrics.observe_refusals(lambda: {f.R_RATE_LIMITED: 4})
    metrics.observe_dropped(dict)
    calls = samples(endpoint, f.M_TOOL_CALLS)
    assert calls == {(("status", s), ("tool", t)): 0 for s in ("success", "error") for t in ("search", "fetch")}
    assert samples(endpoint, f.M_LOOP_SUSPECTED_CALLS) == {(("tool", "search"),): 0, (("tool", "fetch"),): 0}
    refused = samples(endpoint, f.M_REQUESTS_REFUSED)
    assert refused == {(("reason", r),): (4 if r == f.R_RATE_LIMITED else 0) for r in REFUSAL_REASONS}
    assert set(samples(endpoint, f.M_TELEMETRY_DROPPED).values()) == {0}
    provider.shutdown()


def test_calls_are_counted_per_caller_and_a_repeated_call_as_a_suspected_loop() -> None:
    endpoint = PrometheusEndpoint()
    provider = MeterProvider(metric_readers=[endpoint.reader])
    metrics = ServerMetrics(provider.get_meter("test"))
    metrics.loops = RepeatWatch(threshold=5, window=60.0)
    for _ in range(12):
        metrics.record_tool_call("search", "success", 0.01, caller="looper", repeat=("looper", "search", "a", "r"))
    metrics.record_tool_call("search", "error", 0.01, caller="other")
    assert samples(endpoint, f.M_LOOP_SUSPECTED_CALLS) == {(("tool", "search"),): 8}
    assert samples(endpoint, f.M_CALLER_TOOL_CALLS) == {
        (("caller", "looper"), ("status", "success")): 12, (("caller", "looper"), ("status", "error")): 0,
        (("caller", "other"), ("status", "success")): 0, (("caller", "other"), ("status", "error")): 1,
    }
    provider.shutdown()


# -- the real server ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    env = {"MCPTRACE_LOOP_THRESHOLD": "10", "MCPTRACE_LOOP_WINDOW": "60"}
    with running_server(tmp_path_factory.mktemp("labels"), *UNLIMITED, env=env) as proc:
        yield proc


def scrape(server: RunningProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope")))] = s.value
    return out


def test_calls_to_made_up_tools_add_no_series_and_a_loop_is_counted_by_its_tool(server: RunningProcess) -> None:
    async def main() -> None:
        with anyio.fail_after(60):
            async with Client(server.url, mode="2026-07-28",
                              client_info=Implementation(name="agent-x", version="1")) as c:
                await c.call_tool("ping", {})
                for _ in range(200):
                    assert (await c.call_tool(f"tool-{uuid.uuid4().hex}", {})).is_error
                for _ in range(15):
                    await c.call_tool("search_database", {"query": "refund policy", "limit": 5})

    anyio.run(main)
    tools = {dict(labels)["tool"] for labels in scrape(server, f.M_TOOL_CALLS)}
    assert tools == {"ping", "search_database", "get_config", "fetch_upstream", "run_report", f.UNKNOWN_LABEL}
    calls = scrape(server, f.M_TOOL_CALLS)
    assert calls[(("status", "error"), ("tool", f.UNKNOWN_LABEL))] == 200
    assert scrape(server, f.M_LOOP_SUSPECTED_CALLS)[(("tool", "search_database"),)] == 15 - 10 + 1
    assert scrape(server, f.M_CALLER_TOOL_CALLS)[(("caller", "agent-x"), ("status", "success"))] == 16
    assert scrape(server, f.M_MAX_SESSIONS) == {(): 10_000}


def test_methods_the_server_does_not_have_add_no_series(server: RunningProcess) -> None:
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with httpx.Client(timeout=10, headers=headers) as http:
        opened = http.post(server.url, json=initialize_message("prober"))
        headers = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        for i in range(50):
            answer = http.post(server.url, headers=headers,
                               json={"jsonrpc": "2.0", "id": i + 2, "method": f"made/up-{i}", "params": {}})
            assert '"code":-32601' in answer.text
    operations = scrape(server, "mcp_server_operation_duration_seconds_count")
    methods = {dict(labels).get("mcp_method_name") for labels in operations}
    assert f.UNKNOWN_LABEL in methods and not any(m and m.startswith("made/") for m in methods)


def test_an_impossible_loop_setting_stops_the_server_with_a_clear_error(tmp_path: Path) -> None:
    from mcptrace._errors import ProcessStartError

    with pytest.raises(ProcessStartError, match="MCPTRACE_LOOP_THRESHOLD"), running_server(
        tmp_path, env={"MCPTRACE_LOOP_THRESHOLD": "1"},
    ):
        pass
