"""`mcptrace demo` end to end: no configuration, incidents planted in the log, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mcptrace._process import subprocess_env
from tests.helpers import assert_contract, read_log

pytestmark = pytest.mark.slow


def children_using(path: Path) -> list[int]:
    """Pids of processes whose command line mentions `path` (the demo's children do)."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "mcptrace", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=out.parent,
    )
    return done, out


@pytest.fixture(scope="module")
def records(demo: tuple[subprocess.CompletedProcess[str], Path]) -> list[dict[str, object]]:
    done, out = demo
    assert done.returncode == 0, done.stderr[-3000:]
    return read_log(out / "logs" / "mcptrace.log")


def calls_of(records: list[dict[str, object]], client: str) -> list[dict[str, object]]:
    return [r for r in records if r["event"] == "tool_call" and r["client_name"] == client]


def test_the_demo_says_where_the_logs_are_and_summarises_calls_per_tool(demo, records) -> None:  # type: ignore[no-untyped-def]
    done, out = demo
    assert str(out / "logs" / "mcptrace.log") in done.stdout
    assert "Calls and errors per tool" in done.stdout
    for tool in ("search_database", "fetch_upstream", "run_report", "get_config"):
        assert tool in done.stdout
    assert "agents done" in done.stderr  # progress was shown
    assert "Traceback" not in done.stderr


def test_every_line_follows_the_log_contract(records) -> None:  # type: ignore[no-untyped-def]
    assert len(records) > 500
    assert_contract(records)


def test_both_protocol_eras_are_in_the_log_and_only_the_handshake_era_has_sessions(records) -> None:  # type: ignore[no-untyped-def]
    calls = [r for r in records if r["event"] == "tool_call"]
    eras = Counter(r["protocol_version"] for r in calls)
    assert eras["2025-11-25"] > 10 and eras["2026-07-28"] > 100
    for call in calls:
        if call["protocol_version"] == "2026-07-28":
            assert call["session_id"] is None
        else:
            assert call["session_id"]


def test_the_looping_agent_repeats_one_call_hundreds_of_times(records) -> None:  # type: ignore[no-untyped-def]
    loop = calls_of(records, "looping-agent")
    assert len(loop) >= 200
    assert len({(r["tool_name"], r["arguments_hash"]) for r in loop}) == 1
    answered = {r["result_hash"] for r in loop if r["status"] == "success"}
    assert len(answered) == 1  # the same answer every time: a loop, not polling


def test_the_poller_repeats_its_arguments_but_sees_changing_results(records) -> None:  # type: ignore[no-untyped-def]
    polls = [r for r in calls_of(records, "status-poller") if r["status"] == "success"]
    assert len(polls) >= 10
    assert len({r["arguments_hash"] for r in polls}) == 1
    assert len({r["result_hash"] for r in polls}) == len(polls)


def test_the_upstream_outage_shows_as_failed_downstream_calls_then_recovers(records) -> None:  # type: ignore[no-untyped-def]
    fetches = [r for r in records if r["event"] == "tool_call" and r["tool_name"] == "fetch_upstream"]
    outcomes = [r["status"] for r in sorted(fetches, key=lambda r: str(r["timestamp"]))]
    first_failure, last_failure = outcomes.index("error"), len(outcomes) - 1 - outcomes[::-1].index("error")
    assert "success" in outcomes[:first_failure] and "success" in outcomes[last_failure:]
    failed_downstream = [d for r in fetches for d in r["downstream_calls"] if d["status"] == "error"]  # type: ignore[attr-defined]
    assert failed_downstream and all(d["service"] == "upstream" for d in failed_downstream)


def test_failing_calls_and_the_slow_tool_are_planted(records) -> None:  # type: ignore[no-untyped-def]
    flaky = calls_of(records, "flaky-client")
    assert sum(r["status"] == "error" for r in flaky) >= 10
    reports = calls_of(records, "analyst")
    [ok_report] = [r for r in reports if r["tool_name"] == "run_report" and r["status"] == "success"]
    assert len(ok_report["downstream_calls"]) >= 3  # type: ignore[arg-type]
    assert ok_report["duration_ms"] > max(r["duration_ms"] for r in reports if r["tool_name"] != "run_report")  # type: ignore[operator]


def test_an_instrumented_agent_sends_its_trace_and_run_id(records) -> None:  # type: ignore[no-untyped-def]
    bot = calls_of(records, "support-bot")
    assert all(r["trace_id"] and r["parent_span_id"] for r in bot)
    runs = {e["value"] for r in bot for e in r["baggage"] if e["key"] == "run_id"}  # type: ignore[union-attr]
    assert runs == {"conv-1", "conv-2"}
    assert len({r["trace_id"] for r in bot}) == 2


def test_no_process_is_left_behind(demo, records) -> None:  # type: ignore[no-untyped-def]
    _, out = demo
    assert children_using(out) == []


def test_ctrl_c_stops_the_demo_and_its_children(tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    log = out / "logs" / "mcptrace.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcptrace", "demo", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=subprocess_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and b"tool_call" in log.read_bytes()):
            assert proc.poll() is None and time.monotonic() < deadline, "demo never started its workload"
            time.sleep(0.1)
        assert children_using(out)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in stderr
    assert children_using(out) == []
