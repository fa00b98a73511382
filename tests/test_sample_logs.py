"""sample_logs/: real server output that keeps to the log contract and still shows what its README says."""

from __future__ import annotations

import json
from datetime import timedelta

from mcptrace._schema import LOG_SCHEMA_VERSION
from sample_logs._readme import find_incidents, load, render_readme
from tests.helpers import assert_contract
from tests.notebook_helpers import ROOT, SAMPLE_LOGS, planted

SPANS = ROOT / "sample_logs" / "spans" / "spans.jsonl"


def test_every_line_keeps_to_the_log_contract() -> None:
    files = sorted(SAMPLE_LOGS.glob("*.log*"))
    assert files
    records = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    assert len(records) > 1000
    assert_contract(records)
    assert {r["schema_version"] for r in records} == {LOG_SCHEMA_VERSION}


def test_the_set_stays_small() -> None:
    files = [*SAMPLE_LOGS.iterdir(), SPANS]
    assert sum(p.stat().st_size for p in files) < 4 * 1024 * 1024


def test_spans_were_exported_by_the_same_run() -> None:
    rows = [json.loads(line) for line in SPANS.read_text().splitlines()]
    kinds = {r["kind"] for r in rows}
    assert {"server", "client"} <= kinds
    span_ids = {(r["trace_id"], r["span_id"]) for r in rows}
    lines = [json.loads(line) for line in (SAMPLE_LOGS / "mcptrace.log").read_text().splitlines()]
    inside = [r for r in lines if r.get("span_id")]
    assert inside and all((r["trace_id"], r["span_id"]) in span_ids for r in inside)


def test_both_protocol_eras_are_present() -> None:
    calls = [json.loads(line) for line in (SAMPLE_LOGS / "mcptrace.log").read_text().splitlines()]
    calls = [r for r in calls if r["event"] == "tool_call"]
    with_session = sum(1 for r in calls if r.get("session_id"))
    assert 0 < with_session < len(calls)


def test_each_planted_incident_is_found_in_its_window() -> None:
    found = {item.name: item for item in find_incidents(load(SAMPLE_LOGS))}
    truth = planted()
    assert set(truth) <= set(found)
    for name, window in truth.items():
        start = found[name].start
        # found windows are clock times (HH:MM:SS.mmm) of the same day
        switched = window["start"].strftime("%H:%M:%S.%f")[:-3]
        latest = (window["end"] + timedelta(seconds=3)).strftime("%H:%M:%S.%f")[:-3]
        assert switched <= start <= latest, (name, start, window)


def test_readme_is_what_the_logs_say() -> None:
    expected = render_readme(SAMPLE_LOGS, ROOT / "sample_logs" / "planted.toml")
    assert (ROOT / "sample_logs" / "README.md").read_text() == expected, (
        "sample_logs/README.md is stale: run python sample_logs/generate.py --readme"
    )


def test_each_client_span_covers_its_downstream_call_line_and_little_more() -> None:
    """Span and line time the same dependency call: the span opens before the line's clock starts and
    closes after the line is written, so, call by call, it is never shorter and at most 1 ms longer."""
    spans = {r["span_id"]: r for r in map(json.loads, SPANS.read_text().splitlines()) if r["kind"] == "client"}
    lines = [json.loads(line) for line in (SAMPLE_LOGS / "mcptrace.log").read_text().splitlines()]
    calls = [r for r in lines if r["event"] == "downstream_call"]
    assert calls
    for line in calls:
        span = spans[line["span_id"]]
        assert span["name"] == line["service"]
        assert 0 <= span["duration_ms"] - line["duration_ms"] < 1.0, (line["mcp_request_id"], span, line)
