"""Sessions and the incident timeline from known traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcptrace.analysis import active_sessions, method_stats, sessions, timeline
from mcptrace.logs._parse import read_schema

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def frame_of(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    schema = read_schema()
    return pl.DataFrame([{n: r.get(n) for n in schema} for r in rows], schema=schema).lazy()


def call(
    t: timedelta, session: str | None, *, failed: bool = False, rid: str = "r", version: int = 2,
) -> list[dict[str, Any]]:
    """A tools/call's lines: versions 1 and 2 close it with `response_sent`, version 3 writes it as one line."""
    base = {
        "schema_version": version,
        "timestamp": T0 + t,
        "mcp_request_id": rid,
        "session_id": session,
        "caller_id": "agent",
        "tool_name": "search",
        "status": "error" if failed else "success",
        "duration_ms": 1.0,
    }
    if version >= 3:
        return [{**base, "event": "tool_call", "method": "tools/call"}]
    return [{**base, "event": "tool_call"}, {**base, "event": "response_sent", "method": "tools/call"}]


@pytest.mark.parametrize("version", [2, 3])
def test_sessions_count_requests_calls_and_errors(version: int) -> None:
    rows = call(timedelta(seconds=1), "s1", rid="a", version=version)
    rows += call(timedelta(seconds=2), "s1", failed=True, rid="b", version=version)
    rows += call(timedelta(seconds=3), "s2", rid="c", version=version)
    rows += call(timedelta(seconds=4), None, rid="d", version=version)
    got = {r["session_id"]: r for r in sessions(frame_of(rows)).collect().iter_rows(named=True)}
    assert set(got) == {"s1", "s2"}
    assert (got["s1"]["requests"], got["s1"]["calls"], got["s1"]["errors"]) == (2, 2, 1)
    assert got["s1"]["tools"] == ["search"] and got["s1"]["start"] < got["s1"]["end"]


@pytest.mark.parametrize("version", [2, 3])
def test_method_stats_count_each_request_once_whatever_the_version(version: int) -> None:
    rows = call(timedelta(seconds=1), "s1", rid="a", version=version)
    rows += call(timedelta(seconds=2), "s1", failed=True, rid="b", version=version)
    rows.append({"schema_version": version, "timestamp": T0, "mcp_request_id": "p", "event": "response_sent",
                 "method": "ping", "status": "success", "duration_ms": 0.5})
    got = {r["method"]: r for r in method_stats(frame_of(rows)).collect().iter_rows(named=True)}
    assert (got["tools/call"]["calls"], got["tools/call"]["errors"]) == (2, 1)
    assert got["ping"]["calls"] == 1


def test_the_timeline_shows_a_restart_an_error_burst_a_storm_and_a_drop_in_sessions() -> None:
    rows: list[dict[str, Any]] = []
    for minute in range(3):  # ten sessions active for three minutes
        for s in range(10):
            rows += call(timedelta(minutes=minute, seconds=s), f"s{s}", rid=f"{minute}-{s}")
    rows.append({"timestamp": T0 + timedelta(minutes=3), "event": "server_started", "message": "restarted"})
    for s in range(2):  # after the restart only two sessions come back
        rows += call(timedelta(minutes=3, seconds=10 + s), f"n{s}", rid=f"n{s}")
    for k in range(6):  # a burst of failures
        rows += call(timedelta(minutes=4, seconds=k), "n0", failed=True, rid=f"f{k}")
    for k in range(12):  # a rate-limit storm
        rows.append(
            {
                "timestamp": T0 + timedelta(minutes=5, seconds=k),
                "event": "rate_limited",
                "caller_id": "greedy",
            }
        )
    rows.append(
        {
            "timestamp": T0 + timedelta(minutes=6),
            "event": "breaker_state_changed",
            "service": "upstream",
            "status": "open",
        }
    )
    events = timeline(frame_of(rows)).collect()
    kinds = events.get_column("kind").to_list()
    assert kinds == ["start", "session_drop", "error_burst", "rate_limit_storm", "breaker"]
    drop = events.row(1, named=True)
    assert drop["count"] == 8 and "2" in drop["detail"]
    assert events.filter(pl.col("kind") == "error_burst")["count"].to_list() == [6]
    assert "greedy" in events.filter(pl.col("kind") == "rate_limit_storm")["detail"][0]
    active = active_sessions(frame_of(rows)).collect()
    assert active.get_column("active").to_list()[:4] == [10, 10, 10, 2]


def test_version_3_refusals_count_toward_storms_by_the_requests_they_stand_for() -> None:
    def refused(minute: int, reason: str, count: int | None, caller: str | None) -> dict[str, Any]:
        return {"timestamp": T0 + timedelta(minutes=minute), "event": "request_refused", "status": "refused",
                "refusal_reason": reason, "count": count, "caller_id": caller, "mcp_request_id": f"{minute}"}

    rows = [refused(0, "rate_limited", 7, "greedy"), refused(0, "suspended", 3, "greedy"),  # 10: a storm
            refused(1, "rate_limited", 9, "calm"),  # 9: below the threshold
            refused(2, "unauthenticated", None, None)] + [refused(2, "unauthenticated", 11, None)]
    events = timeline(frame_of(rows)).collect()
    assert [(e["kind"], e["count"]) for e in events.iter_rows(named=True)] == [
        ("rate_limit_storm", 10), ("auth_failures", 12)]


def test_counted_incidents_are_stamped_when_they_began_and_a_stop_is_a_stop() -> None:
    start = T0 + timedelta(seconds=4)
    rows: list[dict[str, Any]] = [{"timestamp": start, "event": "server_started", "message": "listening"}]
    rows += [
        {"timestamp": T0 + timedelta(seconds=51 + k * 0.5), "event": "auth_failed", "caller_id": None}
        for k in range(12)
    ]
    rows.append({"timestamp": T0 + timedelta(seconds=70), "event": "server_stopped", "message": "SIGTERM"})
    events = timeline(frame_of(rows), every="1m").collect()
    assert [(e["kind"], e["time"]) for e in events.iter_rows(named=True)] == [
        ("start", start),
        ("auth_failures", T0 + timedelta(seconds=51)),
        ("stop", T0 + timedelta(seconds=70)),
    ]


def _sessions_by_definition(frame: pl.LazyFrame) -> pl.LazyFrame:
    """What `sessions` answers, written the plain way: every row in `_order`'s order, then grouped."""
    from mcptrace.analysis._done import request_done
    from mcptrace.analysis._order import in_order

    tool = pl.col("event") == "tool_call"
    return (
        frame.filter(pl.col("session_id").is_not_null())
        .pipe(in_order)
        .group_by("session_id")
        .agg(
            pl.col("caller_id").drop_nulls().first(),
            pl.col("timestamp").min().alias("start"),
            pl.col("timestamp").max().alias("end"),
            pl.col("mcp_request_id").filter(request_done()).n_unique().cast(pl.Int64).alias("requests"),
            tool.sum().cast(pl.Int64).alias("calls"),
            (request_done() & (pl.col("status") == "error")).fill_null(False).sum().cast(pl.Int64).alias("errors"),
            pl.col("tool_name").filter(tool).drop_nulls().unique(maintain_order=True).alias("tools"),
        )
        .select(["session_id", "caller_id", "start", "end", "requests", "calls", "errors", "tools"])
        .sort("start", "session_id")
    )


_line = st.fixed_dictionaries({
    "schema_version": st.sampled_from([2, 3]),
    # Few distinct values, so that ties in time, request id and event are common.
    "timestamp": st.one_of(st.none(), st.integers(0, 3).map(lambda s: T0 + timedelta(seconds=s))),
    "mcp_request_id": st.one_of(st.none(), st.sampled_from(["a", "b", "c"])),
    "event": st.sampled_from(["tool_call", "response_sent", "request_received"]),
    "session_id": st.one_of(st.none(), st.sampled_from(["s1", "s2"])),
    "caller_id": st.one_of(st.none(), st.sampled_from(["ann", "bob", "cy"])),
    "tool_name": st.one_of(st.none(), st.sampled_from(["search", "fetch", "write"])),
    "status": st.sampled_from(["success", "error"]),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=40))
def test_sessions_name_the_first_caller_and_list_tools_in_call_order_as_the_plain_sort_would(
    rows: list[dict[str, Any]],
) -> None:
    frame = frame_of(rows)
    assert sessions(frame).collect().to_dicts() == _sessions_by_definition(frame).collect().to_dicts()
