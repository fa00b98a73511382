"""The analysis commands on the real server's logs, written while the official SDK client called it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import Implementation

from mcptrace.testing import RunningProcess, running_server, running_upstream, subprocess_env


def mcptrace(
    *args: str | Path, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcptrace", *map(str, args)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
        cwd=cwd,
        check=check,
    )


class Traffic:
    """Request ids of what the client did, so the tests can look for them in the logs."""

    def __init__(self) -> None:
        self.ok: list[str] = []
        self.failed: list[str] = []


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProcess, Traffic]]:
    traffic = Traffic()
    root = tmp_path_factory.mktemp("cli")

    async def drive(url: str) -> None:
        with anyio.fail_after(60):
            for mode in ("legacy", "auto"):
                info = Implementation(name=f"agent-{mode}", version="1")
                async with Client(url, mode=mode, client_info=info) as client:
                    for _ in range(3):
                        r = await client.call_tool("search_database", {"query": "anvil", "limit": 2})
                        traffic.ok.append(r.meta["mcptrace/mcp_request_id"])  # type: ignore[index]
                    r = await client.call_tool("fetch_upstream", {"key": "k1"})
                    traffic.ok.append(r.meta["mcptrace/mcp_request_id"])  # type: ignore[index]
                    bad = await client.call_tool("search_database", {"query": "anvil", "limit": -1})
                    assert bad.is_error
                    traffic.failed.append(bad.meta["mcptrace/mcp_request_id"])  # type: ignore[index]

    with (
        running_upstream(root / "upstream") as upstream,
        running_server(root / "server", "--upstream-url", upstream.base_url) as server,
    ):
        anyio.run(drive, server.url)
        deadline = time.monotonic() + 10
        while traffic.failed[-1] not in server.log_file.read_text():
            assert time.monotonic() < deadline, "the server did not flush its log"
            time.sleep(0.05)
        yield server, traffic


def test_chain_prints_every_line_of_a_failed_request_in_time_order(
    logged: tuple[RunningProcess, Traffic],
) -> None:
    server, traffic = logged
    rid = traffic.failed[0]
    records: list[dict[str, Any]] = json.loads(
        mcptrace("chain", rid, server.log_file, "--format", "json").stdout
    )
    assert [r["event"] for r in records] == ["tool_call"]  # one line per request
    assert {r["mcp_request_id"] for r in records} == {rid}
    assert records[0]["status"] == "error" and "limit" in records[0]["error"]
    table = mcptrace("chain", rid, server.log_file).stdout
    assert rid in table and "ERROR" in table and "tool_call" in table


def test_chain_nests_downstream_calls_under_their_tool_call(logged: tuple[RunningProcess, Traffic]) -> None:
    server, traffic = logged
    table = mcptrace("chain", traffic.ok[3], server.log_file).stdout
    assert "fetch_upstream" in table
    assert "└─ upstream" in table


def test_chain_finds_the_log_without_a_path_from_the_servers_directory(
    logged: tuple[RunningProcess, Traffic],
) -> None:
    server, traffic = logged
    env_run = subprocess.run(
        [sys.executable, "-m", "mcptrace", "chain", traffic.ok[0], "--format", "json"],
        capture_output=True,
        text=True,
        env=subprocess_env({"MCPTRACE_DATA_DIR": str(server.workdir)}),
        timeout=60,
        check=True,
    )
    assert json.loads(env_run.stdout)[0]["mcp_request_id"] == traffic.ok[0]


def test_an_unknown_id_says_what_was_searched_and_suggests_close_ids(
    logged: tuple[RunningProcess, Traffic],
) -> None:
    server, traffic = logged
    typo = traffic.failed[0][:-1]
    out = mcptrace("chain", typo, server.log_file, check=False)
    assert out.returncode != 0
    assert "1 file(s)" in out.stderr and "line(s)" in out.stderr
    assert traffic.failed[0] in out.stderr
    assert "Traceback" not in out.stderr


def test_stats_json_has_the_documented_shape(logged: tuple[RunningProcess, Traffic]) -> None:
    server, _ = logged
    rows = json.loads(mcptrace("stats", server.log_file, "--format", "json").stdout)
    by_tool = {r["tool_name"]: r for r in rows}
    assert set(rows[0]) == {"tool_name", "calls", "errors", "error_rate", "refused", "p50_ms", "p95_ms", "p99_ms"}
    assert by_tool["search_database"]["calls"] == 8 and by_tool["search_database"]["errors"] == 2
    assert by_tool["search_database"]["error_rate"] == pytest.approx(0.25)
    assert by_tool["fetch_upstream"]["errors"] == 0
    s = by_tool["search_database"]
    assert 0 < s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]


def test_stats_filters_and_csv(logged: tuple[RunningProcess, Traffic]) -> None:
    server, _ = logged
    csv_out = mcptrace(
        "stats", server.log_file, "--tool", "fetch_upstream", "--caller", "agent-auto", "--format", "csv"
    ).stdout.splitlines()
    assert csv_out[0] == "tool_name,calls,errors,error_rate,refused,p50_ms,p95_ms,p99_ms"
    assert len(csv_out) == 2 and csv_out[1].startswith("fetch_upstream,1,0,")
    future = json.loads(
        mcptrace("stats", server.log_file, "--since", "2999-01-01T00:00:00Z", "--format", "json").stdout
    )
    assert future == []


def test_errors_splits_own_and_downstream_errors(logged: tuple[RunningProcess, Traffic]) -> None:
    server, traffic = logged
    report = json.loads(mcptrace("errors", server.log_file, "--format", "json").stdout)
    assert isinstance(report, dict) and {"by_tool", "top_errors"} <= set(report)
    search = next(r for r in report["by_tool"] if r["tool_name"] == "search_database")
    assert search["errors"] == 2 and search["own_errors"] == 2 and search["downstream_errors"] == 0
    assert report["top_errors"][0]["example_request_id"] in traffic.failed


def test_errors_as_csv_holds_both_tables_each_row_naming_its_own(logged: tuple[RunningProcess, Traffic]) -> None:
    server, _ = logged
    rows = list(csv.DictReader(io.StringIO(mcptrace("errors", server.log_file, "--format", "csv").stdout)))
    by_tool = [r for r in rows if r["table"] == "by_tool"]
    top = [r for r in rows if r["table"] == "top_errors"]
    assert {r["tool_name"] for r in by_tool} == {"search_database", "fetch_upstream"}
    search = next(r for r in by_tool if r["tool_name"] == "search_database")
    assert (search["calls"], search["own_errors"], search["error"]) == ("8", "2", "")
    assert top and all(r["error"] and r["calls"] == "" for r in top)


def test_the_index_answers_the_same_and_is_rebuilt_when_a_source_changes(
    logged: tuple[RunningProcess, Traffic], tmp_path: Path
) -> None:
    server, traffic = logged
    copy = tmp_path / "mcptrace.log"
    copy.write_bytes(server.log_file.read_bytes())
    before = mcptrace("stats", copy, "--format", "json").stdout
    mcptrace("index", copy)
    assert list((tmp_path / ".mcptrace-index").glob("*/data/date=*/*.parquet"))
    assert mcptrace("stats", copy, "--format", "json").stdout == before
    chain = json.loads(mcptrace("chain", traffic.failed[1], copy, "--format", "json").stdout)
    assert [r["event"] for r in chain] == ["tool_call"]
    with copy.open("ab") as fh:
        fh.write(
            b'{"timestamp":"2026-11-25T23:59:59Z","event":"tool_call","mcp_request_id":"req-late",'
            b'"tool_name":"late_tool","status":"success","duration_ms":1.0}\n'
        )
    rows = json.loads(mcptrace("stats", copy, "--format", "json").stdout)
    assert "late_tool" in {r["tool_name"] for r in rows}
    assert (
        json.loads(mcptrace("chain", "req-late", copy, "--format", "json").stdout)[0]["tool_name"]
        == "late_tool"
    )


def test_loops_json_lists_each_episode_with_its_request_ids(logged: tuple[RunningProcess, Traffic]) -> None:
    server, traffic = logged
    episodes = json.loads(mcptrace("loops", server.log_file, "--threshold", "3", "--format", "json").stdout)
    assert {"caller_id", "session_id", "tool_name", "start", "end", "count", "rate", "request_ids"} <= set(
        episodes[0]
    )
    repeats = {e["caller_id"]: e for e in episodes if e["kind"] == "repeat"}
    assert set(repeats) == {"agent-legacy", "agent-auto"}  # three identical searches each
    assert repeats["agent-legacy"]["session_id"] is not None and repeats["agent-auto"]["session_id"] is None
    assert repeats["agent-legacy"]["request_ids"] == traffic.ok[0:3]
    assert repeats["agent-auto"]["request_ids"] == traffic.ok[4:7]


def test_runs_rebuild_a_session_run_and_a_sessionless_run(logged: tuple[RunningProcess, Traffic]) -> None:
    server, traffic = logged
    rows = json.loads(mcptrace("runs", server.log_file, "--format", "json").stdout)
    by_rule = {r["rule"]: r for r in rows}
    assert set(by_rule) == {"session", "gap"}
    assert by_rule["session"]["request_ids"] == [*traffic.ok[0:4], traffic.failed[0]]
    assert by_rule["gap"]["caller_id"] == "agent-auto" and by_rule["gap"]["errors"] == 1
    sessions = json.loads(mcptrace("sessions", server.log_file, "--format", "json").stdout)
    assert len(sessions) == 1 and sessions[0]["calls"] == 5 and sessions[0]["errors"] == 1
