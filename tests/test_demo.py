"""`mcptrace demo` end to end: no configuration, incidents planted in the log, nothing left running."""

from __future__ import annotations

import os
import re
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


def children_using(path: Path, *, besides: int | None = None) -> list[int]:
    """Pids of processes whose command line mentions `path` (the demo's children do), other than `besides`."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in (os.getpid(), besides):
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
    assert "upstream outage" in done.stdout
    assert "Traceback" not in done.stderr


def test_every_line_follows_the_log_contract(records) -> None:  # type: ignore[no-untyped-def]
    served = [r for r in records if r["event"] in ("tool_call", "response_sent")]  # one closing line a request
    refused = sum(int(r.get("count", 1)) for r in records if r["event"] == "request_refused")  # type: ignore[call-overload]
    assert len(served) + refused > 250
    assert_contract(records)


def test_both_protocol_eras_are_in_the_log_and_only_the_handshake_era_has_sessions(records) -> None:  # type: ignore[no-untyped-def]
    calls = [r for r in records if r["event"] == "tool_call"]
    eras = Counter(r["protocol_version"] for r in calls)
    assert eras["2025-11-25"] > 10 and eras["2026-07-28"] > 10
    for call in calls:
        if call["protocol_version"] == "2026-07-28":
            assert call["session_id"] is None
        else:
            assert call["session_id"]


def test_the_looping_agent_repeats_one_call_hundreds_of_times(records) -> None:  # type: ignore[no-untyped-def]
    loop = calls_of(records, "looping-agent")
    refused = [r for r in records if r["event"] == "request_refused" and r.get("caller_id") == "looping-agent"]
    assert {r["refusal_reason"] for r in refused} <= {"rate_limited", "suspended"}
    assert len(loop) + sum(int(r.get("count", 1)) for r in refused) >= 200  # type: ignore[call-overload]
    assert len({(r["tool_name"], r["arguments_hash"]) for r in loop}) == 1
    answered = {r["result_hash"] for r in loop if r["status"] == "success"}
    assert len(answered) == 1  # the same answer every time: a loop, not polling


def test_the_poller_repeats_its_arguments_but_sees_changing_results(records) -> None:  # type: ignore[no-untyped-def]
    polls = [r for r in calls_of(records, "status-poller") if r["status"] == "success"]
    assert len(polls) >= 5  # the rest fall in the upstream outage and the breaker's cool-down
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


@pytest.mark.parametrize("moment", ["while starting", "while running"])
def test_ctrl_c_stops_the_demo_and_its_children(tmp_path: Path, moment: str) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group, as `killpg` does here."""
    out = tmp_path / "interrupted"
    log = out / "logs" / "mcptrace.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcptrace", "demo", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(), start_new_session=True,
    )

    def reached() -> bool:
        if moment == "while starting":
            return bool(children_using(out, besides=proc.pid))
        return log.exists() and b"tool_call" in log.read_bytes()

    try:
        deadline = time.monotonic() + 60
        while not reached():
            assert proc.poll() is None and time.monotonic() < deadline, f"demo never got {moment}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert b"Traceback" not in stderr and b"Traceback" not in stdout
    assert children_using(out) == []


def test_a_workload_past_its_time_limit_stops_cleanly_and_says_so(server, upstream) -> None:  # type: ignore[no-untyped-def]
    import anyio

    from mcptrace.demo._workload import run_workload

    progress = anyio.run(lambda: run_workload(server.url, upstream_url=upstream.base_url, timeout=1.0))
    assert progress.cut_short
    assert all(a.done and a.crashed is None for a in progress.agents.values())
    assert progress.outage is None


def test_the_demo_ends_with_the_forensics_report(demo, records) -> None:  # type: ignore[no-untyped-def]
    done, _ = demo
    report = done.stdout.split("Forensics report", 1)[1]
    assert "looping-agent search_database" in report  # the planted loop is found
    assert "p99" in report and "run_report" in report
    shown = re.search(r"\(mcptrace chain (req-[0-9a-f]+) for the whole story\)", report)
    assert shown is not None
    failed = {r["mcp_request_id"] for r in records if r["event"] == "tool_call" and r["status"] == "error"}
    assert shown.group(1) in failed
