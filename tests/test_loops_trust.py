"""Loops on-call can trust: probes and polls are not loops, failing retries are retry storms, runs are kept
apart, `threshold` holds for cycles, and severity follows what a loop burned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from mcptrace.analysis import loops
from tests.loop_corpus import T0, evaluate
from tests.test_analysis_properties import frame_of


def _calls(n: int, *, every: float, caller: str = "agent", failed: bool = False, **extra: Any) -> list[dict]:
    return [
        {
            "timestamp": T0 + timedelta(seconds=every * i),
            "event": "tool_call",
            "mcp_request_id": f"{caller}-{i}",
            "caller_id": caller,
            "tool_name": "search",
            "arguments_hash": "same",
            "result_hash": None if failed else "same",
            "status": "error" if failed else "success",
            **extra,
        }
        for i in range(n)
    ]


def test_a_probe_once_a_minute_for_six_hours_is_a_poll_not_a_loop() -> None:
    frame = frame_of(_calls(360, every=60.0, caller="health"))
    assert loops(frame).collect().is_empty()
    (poll,) = loops(frame, include_polls=True).collect().iter_rows(named=True)
    assert poll["kind"] == "poll" and poll["severity"] == "low" and poll["period_s"] == 60.0


def test_an_identical_failing_call_repeated_is_a_retry_storm() -> None:
    (storm,) = loops(frame_of(_calls(13, every=0.15, failed=True))).collect().iter_rows(named=True)
    assert storm["kind"] == "retry_storm" and storm["errors"] == 13


def test_two_concurrent_conversations_of_one_client_are_two_loops() -> None:
    rows = []
    for i in range(12):
        for run in ("conv-a", "conv-b"):
            rows.append(
                {
                    "timestamp": T0 + timedelta(milliseconds=100 * len(rows)),
                    "event": "tool_call",
                    "mcp_request_id": f"{run}-{i}",
                    "caller_id": "bot",
                    "tool_name": "search",
                    "arguments_hash": run,
                    "result_hash": run,
                    "status": "success",
                    "baggage": [{"key": "run_id", "value": run}],
                }
            )
    found = loops(frame_of(rows)).collect()
    assert sorted(found["kind"].to_list()) == ["repeat", "repeat"] and found["count"].to_list() == [12, 12]
    assert set(found["run"]) == {"baggage:conv-a", "baggage:conv-b"}


def test_threshold_applies_to_cycles() -> None:
    rows = [
        {
            "timestamp": T0 + timedelta(milliseconds=100 * i),
            "event": "tool_call",
            "mcp_request_id": f"c{i}",
            "caller_id": "agent",
            "tool_name": f"step{i % 3}",
            "arguments_hash": "a",
            "result_hash": "r",
            "status": "success",
        }
        for i in range(30)
    ]
    assert loops(frame_of(rows), threshold=30).collect()["count"].to_list() == [30]
    assert loops(frame_of(rows), threshold=41).collect().is_empty()


def test_severity_follows_the_rate_and_the_burn_not_the_count_alone() -> None:
    fast = loops(frame_of(_calls(60, every=0.2))).collect()
    slow = loops(frame_of(_calls(60, every=7.3, caller="slow") + _calls(60, every=13.1, caller="slow2"))).collect()
    assert fast["severity"].to_list() == ["high"]
    assert set(slow["severity"]) <= {"low", "medium"}


def test_precision_and_recall_on_the_labelled_corpus() -> None:
    results = evaluate()
    now, before = results["loops (defaults)"], results["by caller and session, no cadence"]
    assert now.precision("loop") == 1.0 and now.recall("loop") >= 0.9
    assert now.recall("poll") == 1.0 and now.recall("retry") == 1.0
    assert now.separated >= 0.8 * now.concurrent
    assert before.precision("loop") < now.precision("loop")


def test_the_sample_logs_probe_is_a_poll_and_the_planted_loop_is_high() -> None:
    from mcptrace.analysis import load
    from tests.notebook_helpers import SAMPLE_LOGS, planted

    found = loops(load([SAMPLE_LOGS], use_index=False).frame, include_polls=True).collect()
    assert set(found.filter(pl.col("caller_id") == "ci-probe")["kind"]) == {"poll"}
    truth = planted()["agent_loop"]
    (loop,) = found.filter(pl.col("kind") == "repeat").iter_rows(named=True)
    assert (loop["caller_id"], loop["severity"]) == (truth["caller_id"], "high")


def test_the_demo_poller_failing_during_the_outage_is_a_retry_storm_not_a_loop() -> None:
    from mcptrace.analysis import load
    from tests.notebook_helpers import ROOT

    found = loops(load([ROOT / "sample_logs" / "demo-v2.jsonl"], use_index=False).frame).collect()
    kinds = {(e["caller_id"], e["kind"], e["severity"]) for e in found.iter_rows(named=True)}
    assert ("looping-agent", "repeat", "high") in kinds
    assert {k for c, k, _ in kinds if c == "status-poller"} == {"retry_storm"}
