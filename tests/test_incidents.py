"""`mcptrace incidents`: what went wrong, one row per cause, on the sample logs and on generated logs with
incidents planted in calm traffic."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from mcptrace.analysis import incidents
from mcptrace.analysis._incidents import INCIDENT_COLUMNS
from tests.incident_logs import PLANTABLE, SUBJECTS, T0, Log, background, evaluate, frame, generated, matches
from tests.notebook_helpers import SAMPLE_LOGS, planted
from tests.test_analysis_cli import mcptrace

#: The generator's names for what it planted, and the kind `incidents` gives each.
SAMPLE_KINDS = {
    "slow_tool": ("latency_regression", "tool_name"),
    "upstream_outage": ("dependency_outage", "service"),
    "auth_failures": ("auth_failures", None),
    "agent_loop": ("agent_loop", "caller_id"),
    "rate_limit_storm": ("rate_limit_storm", "caller_id"),
}


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_sample_logs_name_the_five_planted_incidents_and_nothing_else() -> None:
    rows = json.loads(mcptrace("incidents", SAMPLE_LOGS, "--no-index", "--format", "json").stdout)
    truth = planted()
    assert sorted(r["kind"] for r in rows) == sorted(kind for kind, _ in SAMPLE_KINDS.values())
    for name, window in truth.items():
        kind, subject_key = SAMPLE_KINDS[name]
        (row,) = [r for r in rows if r["kind"] == kind]
        assert set(row) == set(INCIDENT_COLUMNS)
        if subject_key:
            assert row["subject"] == window[subject_key]
        start, end = _utc(row["start"]), _utc(row["end"])
        assert window["start"] - timedelta(seconds=2) <= start <= end <= window["end"] + timedelta(seconds=3), name
        assert row["severity"] in {"low", "medium", "high"} and row["summary"] and row["request_ids"]
        assert row["evidence"] and all(isinstance(v, int | float) for v in row["evidence"].values())


def test_rows_come_most_severe_first_in_every_format() -> None:
    table = mcptrace("incidents", SAMPLE_LOGS, "--no-index").stdout.splitlines()
    assert table[0].split()[:4] == ["kind", "start", "end", "severity"]
    assert len(table) == 2 + 5
    rows = list(csv.DictReader(io.StringIO(mcptrace("incidents", SAMPLE_LOGS, "--no-index", "--format", "csv").stdout)))
    assert list(rows[0]) == INCIDENT_COLUMNS
    ranks = [("high", "medium", "low").index(r["severity"]) for r in rows]
    assert ranks == sorted(ranks)
    assert all(r["start"].endswith("Z") and "T" in r["start"] for r in rows)


def test_since_and_until_narrow_the_search() -> None:
    window = planted()["upstream_outage"]
    after = (window["end"] + timedelta(seconds=5)).isoformat()
    rows = json.loads(mcptrace("incidents", SAMPLE_LOGS, "--no-index", "--since", after, "--format", "json").stdout)
    assert "dependency_outage" not in {r["kind"] for r in rows} and "agent_loop" in {r["kind"] for r in rows}
    until = window["end"].isoformat()
    rows = json.loads(mcptrace("incidents", SAMPLE_LOGS, "--no-index", "--until", until, "--format", "json").stdout)
    assert {r["kind"] for r in rows} == {"latency_regression", "dependency_outage"}


def test_calm_traffic_has_no_incidents() -> None:
    for seed in range(5):
        lines, plants = generated(seed, [])
        assert plants == [] and incidents(lines).collect().is_empty()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kinds=st.lists(st.sampled_from(PLANTABLE), unique=True, max_size=3))
def test_planted_incidents_are_found_and_nothing_else(seed: int, kinds: list[str]) -> None:
    lines, plants = generated(seed, kinds)
    rows = incidents(lines).collect().to_dicts()
    for plant in plants:
        assert any(matches(r, plant) for r in rows), (plant, rows)
    for row in rows:
        assert any(matches(row, p) for p in plants), (row, plants)


def test_precision_and_recall_over_generated_logs() -> None:
    results = evaluate(logs=40)
    for kind, tally in results.items():
        assert tally.precision == 1.0 and tally.recall >= 0.9, (kind, tally)


def _log(*events: tuple[int, str, dict[str, object]]) -> pl.LazyFrame:
    import random

    log = Log(random.Random(1))
    for seconds, event, fields in events:
        log.add(T0 + timedelta(seconds=seconds), event, **fields)
    return frame(log.lines)


def test_a_start_without_a_stop_is_a_crash_and_a_stop_then_start_a_restart() -> None:
    lines = _log(
        (0, "server_started", {}),
        (30, "response_sent", {"status": "success"}),
        (95, "server_started", {}),
        (200, "server_stopped", {}),
        (210, "server_started", {}),  # and still running at the end: not an incident
    )
    rows = incidents(lines).collect().sort("start").to_dicts()
    assert [(r["kind"], r["severity"], r["subject"]) for r in rows] == [
        ("restart", "high", "server"),
        ("restart", "low", "server"),
    ]
    assert rows[0]["end"] == T0 + timedelta(seconds=95)


def test_lines_the_log_lost_are_a_restart_of_the_log_and_a_bad_hash_a_refused_resource() -> None:
    lines = _log(
        (0, "server_started", {}),
        (
            50,
            "log_gap",
            {
                "gap_start": T0 + timedelta(seconds=40),
                "gap_end": T0 + timedelta(seconds=49),
                "dropped_lines": 120,
                "message": "disk full",
            },
        ),
        (60, "resource_rejected", {"resource_url": SUBJECTS["resource_refused"]}),
    )
    rows = {r["kind"]: r for r in incidents(lines).collect().to_dicts()}
    assert rows["restart"]["subject"] == "log" and rows["restart"]["evidence"]["lost_lines"] == 120
    assert rows["restart"]["start"] == T0 + timedelta(seconds=40)
    assert rows["resource_refused"]["severity"] == "high"


def test_a_background_without_the_columns_of_refusals_still_reads() -> None:
    import random

    log = Log(random.Random(3))
    background(log)
    lines = frame(log.lines).select("timestamp", "event", "mcp_request_id", "tool_name", "status", "duration_ms")
    assert incidents(lines).collect().columns == INCIDENT_COLUMNS


def test_a_corrupt_line_is_reported_with_its_place_and_the_incidents_still_come(tmp_path: Path) -> None:
    log = tmp_path / "mcptrace.log"
    log.write_text((SAMPLE_LOGS / "mcptrace.log").read_text() + '{"timestamp": "2026-12-05T07:15:00Z", "ev\n')
    done = mcptrace("incidents", log, "--no-index", "--format", "json")
    assert len(json.loads(done.stdout)) == 5
    assert f"{log}:" in done.stderr or "mcptrace.log:" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_breaker_that_opened_is_a_dependency_outage_even_with_few_failures() -> None:
    import random

    log = Log(random.Random(5))
    background(log)
    at = T0 + timedelta(minutes=5)
    for n in range(3):
        log.call(at + timedelta(seconds=n), "agent-1", "fetch_upstream", downstream_failed=True)
    log.add(at + timedelta(seconds=3), "breaker_state_changed", mcp_request_id=None, service="upstream",
            breaker_state="open", message="upstream: closed -> open")
    (row,) = incidents(frame(log.lines)).collect().to_dicts()
    assert (row["kind"], row["subject"], row["severity"]) == ("dependency_outage", "upstream", "high")
    assert "breaker opened" in row["summary"] and row["evidence"]["errors"] == 3


def test_a_bad_bucket_is_a_one_line_error() -> None:
    done = mcptrace("incidents", SAMPLE_LOGS, "--no-index", "--every", "5x", check=False)
    assert done.returncode == 2 and "not a time bucket: '5x'" in done.stderr and "Traceback" not in done.stderr
