"""The log contract since version 2: each line names its protocol era, its client, and the trace the client sent."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import anyio
import polars as pl
from mcp import Client
from mcp.types import Implementation

from mcptrace import LOG_SCHEMA_VERSION, polars_schema
from mcptrace._schema import ADDED_IN_V2, validate_record
from mcptrace.testing import RunningProcess
from tests.helpers import assert_contract, read_log

V1_SAMPLE = Path(__file__).parent.parent / "sample_logs" / "v1-sample.jsonl"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def tool_calls_by(
    server: RunningProcess, client_name: str, *, timeout: float = 5.0
) -> list[dict[str, object]]:
    """The tool_call lines of one client, once the server's log flusher has written them (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            r
            for r in read_log(server.log_file)
            if r["event"] == "tool_call" and r.get("client_name") == client_name
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_writer_stamps_the_current_schema_version_3() -> None:
    assert LOG_SCHEMA_VERSION == 3


def test_a_sessionless_call_logs_era_client_and_trace_context_but_no_session(
    server: RunningProcess,
) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            info = Implementation(name="modern-agent", version="3.1.4")
            async with Client(server.url, mode="2026-07-28", client_info=info) as c:
                meta = {"traceparent": TRACEPARENT, "baggage": "run_id=r-42,conversation=c%207"}
                await c.call_tool("ping", {}, meta=meta)  # type: ignore[arg-type]

    anyio.run(main)
    [call] = tool_calls_by(server, "modern-agent")
    assert call["protocol_version"] == "2026-07-28"
    assert call["client_version"] == "3.1.4"
    assert call["caller_id"] == "modern-agent"
    assert call["session_id"] is None
    assert call["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert call["parent_span_id"] == "00f067aa0ba902b7"
    assert call["baggage"] == [{"key": "run_id", "value": "r-42"}, {"key": "conversation", "value": "c 7"}]
    assert call["schema_version"] == LOG_SCHEMA_VERSION


def test_a_handshake_session_logs_its_era_and_its_session(server: RunningProcess) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(
                server.url, mode="legacy", client_info=Implementation(name="old-agent", version="0.9")
            ) as c:
                await c.call_tool("ping", {})

    anyio.run(main)
    assert tool_calls_by(server, "old-agent")
    records = [r for r in read_log(server.log_file) if r.get("client_name") == "old-agent"]
    init = next(r for r in records if r["method"] == "initialize")
    assert init["protocol_version"] == "2025-11-25"
    assert init["caller_id"] == "old-agent"
    [call] = [r for r in records if r["event"] == "tool_call"]
    assert call["protocol_version"] == "2025-11-25" and call["client_version"] == "0.9"
    assert isinstance(call["session_id"], str) and call["session_id"]
    assert call.get("trace_id") is None and call.get("baggage") is None


def test_a_malformed_traceparent_is_ignored_not_logged_and_not_fatal(server: RunningProcess) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(server.url, client_info=Implementation(name="sloppy-agent", version="1")) as c:
                result = await c.call_tool("ping", {}, meta={"traceparent": "00-zz-yy-01", "baggage": 7})  # type: ignore[arg-type]
                assert not result.is_error

    anyio.run(main)
    [call] = tool_calls_by(server, "sloppy-agent")
    assert call.get("trace_id") is None and call.get("baggage") is None
    assert_contract([call])


def test_every_line_written_follows_the_current_contract(server: RunningProcess) -> None:
    records = read_log(server.log_file)
    assert records and all(r["schema_version"] == LOG_SCHEMA_VERSION for r in records)
    assert_contract(records)


def test_the_v1_golden_sample_still_validates_and_carries_no_v2_field() -> None:
    records = [json.loads(line) for line in V1_SAMPLE.read_text().splitlines()]
    assert records and all(r["schema_version"] == 1 for r in records)
    assert_contract(records)
    assert not any(ADDED_IN_V2 & set(r) for r in records)


def test_a_v1_line_carrying_a_v2_field_is_flagged() -> None:
    line = {
        "timestamp": "2026-01-01T00:00:00.000Z",
        "event": "tool_call",
        "mcp_request_id": "req-1",
        "schema_version": 1,
        "client_name": "x",
    }
    assert validate_record(line) == ["undeclared field client_name in schema 1"]


def test_malformed_baggage_entries_are_flagged() -> None:
    line = {
        "timestamp": "2026-01-01T00:00:00.000Z",
        "event": "tool_call",
        "mcp_request_id": "req-1",
        "schema_version": 2,
        "baggage": [{"key": "a"}],
    }
    assert validate_record(line) and "baggage" in validate_record(line)[0]


def test_files_of_every_version_read_with_one_polars_schema(server: RunningProcess, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    v2_sample = V1_SAMPLE.parent / "demo-v2.jsonl"
    mixed.write_bytes(V1_SAMPLE.read_bytes() + v2_sample.read_bytes() + server.log_file.read_bytes())
    frame = pl.read_ndjson(mixed, schema=polars_schema())
    assert set(frame["schema_version"].unique().to_list()) == {1, 2, LOG_SCHEMA_VERSION}
    modern = frame.filter(pl.col("client_name") == "modern-agent", pl.col("event") == "tool_call")
    assert modern["baggage"].list.len().to_list() == [2]
    assert (
        frame.filter(pl.col("schema_version") == 1)["protocol_version"].null_count()
        == frame.filter(pl.col("schema_version") == 1).height
    )


def test_every_shipped_sample_log_follows_the_contract_of_its_version() -> None:
    samples = sorted(V1_SAMPLE.parent.glob("*.jsonl"))
    assert len(samples) >= 2
    for sample in samples:
        records = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
        assert records, sample.name
        assert_contract(records)


def test_the_demo_sample_holds_both_eras() -> None:
    frame = pl.read_ndjson(V1_SAMPLE.parent / "demo-v2.jsonl", schema=polars_schema())
    calls = frame.filter(pl.col("event") == "tool_call")
    assert set(calls["protocol_version"].unique().to_list()) == {"2025-11-25", "2026-07-28"}
    modern = calls.filter(pl.col("protocol_version") == "2026-07-28")
    assert modern["session_id"].null_count() == modern.height


def test_a_request_is_one_line_and_one_still_running_is_written_down_meanwhile(server: RunningProcess) -> None:
    """Version 3: one line per request; a request running past 0.2 s also leaves `request_received`,
    dated when it started, before its end, so a crash meanwhile leaves evidence of it."""

    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(server.url, mode="legacy",
                              client_info=Implementation(name="patient-agent", version="1")) as c:
                assert not (await c.call_tool("ping", {})).is_error
                assert not (await c.call_tool("run_report", {})).is_error  # five steps of 0.25 s

    anyio.run(main)
    ping, report = sorted(tool_calls_by(server, "patient-agent"), key=lambda r: str(r["timestamp"]))
    lines = read_log(server.log_file)
    assert [r["event"] for r in lines if r.get("mcp_request_id") == ping["mcp_request_id"]] == ["tool_call"]
    mine = [r for r in lines if r.get("mcp_request_id") == report["mcp_request_id"]]
    events = [r["event"] for r in mine]
    assert events.count("request_received") == 1 and events[-1] == "tool_call"  # written while it ran
    received, done = mine[events.index("request_received")], mine[-1]
    assert min(str(r["timestamp"]) for r in mine) == received["timestamp"]  # dated when it started
    assert received["tool_name"] == "run_report" and received["client_name"] == "patient-agent"
    assert received["session_id"] == done["session_id"] and received["jsonrpc_id"] == done["jsonrpc_id"]
    started = datetime.fromisoformat(str(received["timestamp"]))
    ended = datetime.fromisoformat(str(done["timestamp"]))
    assert abs((ended - started).total_seconds() * 1000 - float(done["duration_ms"])) < 50
    assert_contract(mine)
