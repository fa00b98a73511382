"""Dependencies fail for real and the server copes: database gone or locked, log sink full, signals.

Each test breaks a real part under a running `mcptrace serve`, asserts what a
client sees and what `/health` says, then repairs it and asserts the server
recovers by itself. `/health` answers are not cached here (cache 0 s). What a
kill -9 costs the log is in test_log_durability.py, gaps in the log in test_log_gaps.py.
"""

from __future__ import annotations

import json
import resource
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from mcptrace.analysis import load
from mcptrace.testing import RunningProcess, initialize_message, running_server
from tests.helpers import UNLIMITED, eventually

T = TypeVar("T")
#: Guards off the path: these tests are about the log, not rate limits.
NO_CACHE = {"MCPTRACE_HEALTH_CACHE_SECONDS": "0", "MCPTRACE_BREAKER_COOLDOWN": "0.5"}



def health(server: RunningProcess) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{server.base_url}/health", timeout=10)
    return r.status_code, r.json()


def call(server: RunningProcess, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tool call on a fresh stateless exchange, answered as JSON."""
    headers = {"accept": "application/json", "content-type": "application/json"}
    with httpx.Client(timeout=15, headers=headers) as http:
        init = initialize_message("faults")
        r = http.post(server.url, json=init)
        session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        http.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        body = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }
        r = http.post(server.url, json=body, headers=session)
        assert r.status_code == 200, r.text
        assert "Traceback" not in r.text
        result: dict[str, Any] = r.json()["result"]
        return result


def log_lines(path: Path) -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
    """(records, unreadable lines as (file name, line number))."""
    records, torn = [], []
    for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            torn.append((path.name, number))
    return records, torn


@pytest.fixture(scope="module")
def db_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    with running_server(tmp_path_factory.mktemp("db"), env=NO_CACHE) as srv:
        yield srv


def test_a_removed_database_is_a_clean_tool_error_and_unhealthy_until_it_returns(
    db_server: RunningProcess,
) -> None:
    db = db_server.workdir / "mcptrace.sqlite3"
    assert not call(db_server, "search_database", {"query": "anvil"}).get("isError")
    db.rename(db.with_suffix(".moved"))
    try:
        result = call(db_server, "search_database", {"query": "anvil"})
        assert result["isError"] and "database" in result["content"][0]["text"]
        status, body = health(db_server)
        assert status == 503 and body["status"] == "unhealthy"
        assert body["checks"]["sqlite"]["status"] == "unhealthy"
    finally:
        db.with_suffix(".moved").rename(db)

    def recovered() -> None:
        status, body = health(db_server)
        assert status == 200 and body["status"] == "healthy", body
        assert not call(db_server, "search_database", {"query": "anvil"}).get("isError")

    eventually(recovered)


def test_a_locked_database_is_a_clean_tool_error_and_unhealthy_until_released(
    db_server: RunningProcess,
) -> None:
    lock = sqlite3.connect(db_server.workdir / "mcptrace.sqlite3", timeout=5)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        result = call(db_server, "search_database", {"query": "anvil"})
        assert result["isError"]
        assert "locked" in result["content"][0]["text"] or "open" in result["content"][0]["text"]
        status, body = health(db_server)
        assert status == 503 and body["checks"]["sqlite"]["status"] == "unhealthy"
    finally:
        lock.rollback()
        lock.close()

    def recovered() -> None:
        status, body = health(db_server)
        assert status == 200 and body["status"] == "healthy", body
        assert not call(db_server, "search_database", {"query": "anvil"}).get("isError")

    eventually(recovered)


def test_a_full_log_sink_drops_and_counts_lines_but_every_request_is_answered(tmp_path: Path) -> None:
    with running_server(tmp_path, env=NO_CACHE) as srv:
        pid = srv.process.pid
        limit = srv.log_file.stat().st_size + 3000
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))  # soft limit only
        try:
            for _ in range(20):
                assert call(srv, "ping", {})["content"][0]["text"] == "pong"

            def degraded() -> dict[str, Any]:
                status, body = health(srv)
                assert status == 200 and body["status"] == "degraded", body
                sink = body["checks"]["log_sink"]
                assert sink["status"] == "degraded" and "too large" in sink["error"]
                assert sink["lines_dropped"] > 0
                return sink

            eventually(degraded)
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

        for _ in range(3):
            assert call(srv, "ping", {})["content"][0]["text"] == "pong"

        def recovered() -> dict[str, Any]:
            status, body = health(srv)
            assert status == 200 and body["checks"]["log_sink"]["status"] == "healthy", body
            return dict(body["checks"]["log_sink"])

        sink = eventually(recovered)
        metrics = httpx.get(f"{srv.base_url}/metrics", timeout=10).text.splitlines()
        dropped = [float(m.split()[-1]) for m in metrics
                   if m.startswith("mcptrace_telemetry_dropped_total{") and 'reason="file_write_failed"' in m]
        assert dropped == [sink["lines_dropped"]], "the metric counts what /health counts"
        records, torn = log_lines(srv.log_file)
        assert len(records) == sink["lines_written"] + sink["gaps"], "every line counted as written is in the file"
        assert torn == [] and sink["lines_torn"] == 0, "the write the limit cut was cut back to whole lines"
        assert load([srv.log_file]).report.corrupt == []
        [gap] = [r for r in records if r["event"] == "log_gap"]
        assert gap["dropped_lines"] == sink["lines_dropped"] and gap["error"].startswith("EFBIG")
        assert records[-1]["event"] == "tool_call", "lines after the repair are whole"
        assert "Traceback" not in srv.stderr()


def test_sigterm_lets_calls_in_flight_finish_and_flushes_the_log(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        with httpx.Client(timeout=30, headers=headers) as http:
            info = {"name": "t", "version": "1"}
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": info}}
            r = http.post(srv.url, json=init)
            session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            http.post(srv.url, json=note, headers=session)
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "run_report", "arguments": {}, "_meta": {"progressToken": "p"}}}
            events: list[str] = []
            with http.stream("POST", srv.url, json=call, headers=session) as stream:
                for line in stream.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    events.append(line)
                    if len(events) == 1:  # the report is under way: stop the server now
                        srv.process.send_signal(signal.SIGTERM)
        assert any("notifications/progress" in e for e in events)
        final = json.loads(events[-1].removeprefix("data:"))
        assert final["id"] == 2 and not final["result"]["isError"], final
        assert len(final["result"]["structuredContent"]["sections"]) >= 2
        assert srv.process.wait(30) == 0
        records, torn = log_lines(srv.log_file)
        assert not torn
        reports = [r for r in records if r["event"] == "tool_call" and r.get("tool_name") == "run_report"]
        assert reports and reports[-1]["status"] == "success"
        assert records[-1]["event"] == "server_stopped"


def test_rotation_under_a_concurrent_burst_loses_and_tears_nothing(tmp_path: Path) -> None:
    sessions, calls = 8, 40
    args = ("--log-max-bytes", "20000", "--log-backups", "1000", *UNLIMITED)
    with running_server(tmp_path, *args) as srv:
        request_ids: list[str] = []

        async def one_session(n: int) -> None:
            headers = {"accept": "application/json", "content-type": "application/json"}
            async with httpx.AsyncClient(timeout=30, headers=headers) as http:
                init = initialize_message(f"burst-{n}")
                r = await http.post(srv.url, json=init)
                request_ids.append(r.headers["x-request-id"])
                session = {
                    "mcp-session-id": r.headers["mcp-session-id"],
                    "mcp-protocol-version": "2025-11-25",
                }
                await http.post(
                    srv.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
                )
                for i in range(calls):
                    body = {
                        "jsonrpc": "2.0",
                        "id": i + 2,
                        "method": "tools/call",
                        "params": {"name": "search_database", "arguments": {"query": "rocket", "limit": 3}},
                    }
                    r = await http.post(srv.url, json=body, headers=session)
                    assert r.status_code == 200 and "result" in r.json(), r.text
                    request_ids.append(r.headers["x-request-id"])

        async def main() -> None:
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for n in range(sessions):
                        tg.start_soon(one_session, n)

        anyio.run(main)
    files = sorted(srv.log_file.parent.glob("mcptrace.log*"))
    assert len(files) > 5, "the burst rotated the log several times"
    records: list[dict[str, Any]] = []
    for path in files:
        file_records, torn = log_lines(path)
        assert not torn, torn
        records.extend(file_records)
    answered = [r["mcp_request_id"] for r in records if r["event"] in ("tool_call", "response_sent")]
    assert len(request_ids) == sessions * (calls + 1)
    assert sorted(answered) == sorted(request_ids), "each request logged once, as it was answered"
