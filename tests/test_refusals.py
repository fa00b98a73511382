"""The `request_refused` writer on its own, with a hand-driven clock: one line now, then one per second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcptrace.guards._refusals import Refusals
from mcptrace.guards._stats import GuardStats
from mcptrace.telemetry._log import EventLogger, LogSink, bind, unbind
from tests.helpers import assert_contract


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorded:
    """A real logger on a real file, and the `Refusals` writing to it without its background thread."""

    def __init__(self, tmp_path: Path, **kwargs: Any) -> None:
        self.path = tmp_path / "log.jsonl"
        self.logger = EventLogger(LogSink(self.path))
        self.clock = Clock()
        self.stats = GuardStats()
        self.refusals = Refusals(self.logger, stats=self.stats, clock=self.clock,
                                 wall_clock=lambda: 1_796_000_000 + self.clock.now, background=False, **kwargs)

    def lines(self) -> list[dict[str, Any]]:
        self.logger.sink.flush()
        return [json.loads(line) for line in self.path.read_text().splitlines()]


def test_a_lone_refusal_is_written_at_once_with_everything_known(tmp_path: Path) -> None:
    r = Recorded(tmp_path)
    r.refusals.record("unauthenticated", "req-1", http_status=401, client_address="10.0.0.7", method="POST",
                      error="missing bearer token")
    [line] = r.lines()
    assert {k: line[k] for k in ("event", "level", "status", "refusal_reason", "mcp_request_id", "http_status",
                                 "client_address", "error", "transport")} == {
        "event": "request_refused", "level": "warning", "status": "refused", "refusal_reason": "unauthenticated",
        "mcp_request_id": "req-1", "http_status": 401, "client_address": "10.0.0.7",
        "error": "missing bearer token", "transport": "http",
    }
    assert "count" not in line and "caller_id" not in line  # absent count means one; unknowns are left out
    assert r.stats.refused == {"unauthenticated": 1}
    assert_contract(r.lines())


def test_a_flood_is_one_line_now_and_one_line_per_second_with_count_and_first_and_last_ids(tmp_path: Path) -> None:
    r = Recorded(tmp_path)
    for i in range(250):  # 2.5 s of one caller hitting its limit, every 10 ms
        r.refusals.record("rate_limited", f"req-{i}", http_status=429, caller_id="looper", principal="tok:1",
                          tool_name="ping", retry_after_ms=100 + i, limit_scope="caller")
        r.clock.now = 1000 + (i + 1) / 100
        if i % 7 == 0:  # the background writer wakes when it can: late is no loss
            r.refusals.flush()
    r.refusals.close()
    lines = r.lines()
    assert [(x["mcp_request_id"], x.get("last_request_id"), x.get("count", 1)) for x in lines] == [
        ("req-0", None, 1), ("req-1", "req-99", 99), ("req-100", "req-199", 100), ("req-200", "req-249", 50)]
    assert sum(x.get("count", 1) for x in lines) == 250 == r.stats.refused["rate_limited"]
    assert lines[1]["retry_after_ms"] == 101, "the details of the first refusal a line stands for"
    assert lines[1]["timestamp"] < lines[1]["last_timestamp"] <= lines[2]["timestamp"]
    assert_contract(lines)


def test_a_key_quiet_for_a_second_is_written_at_once_again(tmp_path: Path) -> None:
    r = Recorded(tmp_path)
    r.refusals.record("forbidden", "a", caller_id="x", tool_name="run_report", http_status=403)
    r.clock.now += 1.5
    r.refusals.flush()
    r.refusals.record("forbidden", "b", caller_id="x", tool_name="run_report", http_status=403)
    assert [x["mcp_request_id"] for x in r.lines()] == ["a", "b"]


def test_callers_reasons_and_tools_are_kept_apart(tmp_path: Path) -> None:
    r = Recorded(tmp_path)
    for who, reason, tool in [("a", "rate_limited", "ping"), ("b", "rate_limited", "ping"),
                              ("a", "suspended", "ping"), ("a", "rate_limited", "get_config")]:
        r.refusals.record(reason, f"{who}-{reason}-{tool}", principal=who, tool_name=tool)
    assert len(r.lines()) == 4


def test_made_up_tool_names_cannot_grow_the_table(tmp_path: Path) -> None:
    r = Recorded(tmp_path, max_keys=10)
    for i in range(1000):
        r.refusals.record("forbidden", f"req-{i}", principal="tok:1", tool_name=f"tool-{i}", http_status=403)
    r.refusals.close()
    lines = r.lines()
    assert len(lines) == 12 and sum(x.get("count", 1) for x in lines) == 1000
    assert [x.get("count", 1) for x in lines[10:]] == [1, 989]
    assert not any("tool_name" in x for x in lines[10:]), "past the bound, refusals are counted without their tool"


def test_nothing_counted_is_lost_at_close_and_no_bound_field_leaks_in(tmp_path: Path) -> None:
    r = Recorded(tmp_path)
    token = bind(session_id="someone-elses", jsonrpc_id="9")
    try:
        for i in range(5):
            r.refusals.record("session_cap", f"req-{i}", principal="tok:2", http_status=429)
    finally:
        unbind(token)
    r.refusals.close()
    lines = r.lines()
    assert sum(x.get("count", 1) for x in lines) == 5
    assert not any("session_id" in x or "jsonrpc_id" in x for x in lines)


def test_the_background_writer_flushes_within_the_interval(tmp_path: Path) -> None:
    import time

    logger = EventLogger(LogSink(tmp_path / "log.jsonl"))
    refusals = Refusals(logger, interval=0.2)
    try:
        for i in range(3):
            refusals.record("rate_limited", f"req-{i}", principal="tok:3")
        deadline = time.monotonic() + 10
        while True:
            logger.sink.flush()
            lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
            if sum(x.get("count", 1) for x in lines) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [x.get("count", 1) for x in lines] == [1, 2]
    finally:
        refusals.close()
        logger.close()
