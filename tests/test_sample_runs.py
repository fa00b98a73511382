"""`runs` rebuilds the agent runs planted in the demo's two-era sample log, with and without sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mcptrace.testing import subprocess_env

DEMO_LOG = Path(__file__).parent.parent / "sample_logs" / "demo-v2.jsonl"


def runs_of(path: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "mcptrace", "runs", str(path), "--format", "json"],
        capture_output=True, text=True, env=subprocess_env(), timeout=120, check=True,
    )
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def test_each_planted_agent_run_is_rebuilt_by_the_rule_that_fits_its_era() -> None:
    rows = runs_of(DEMO_LOG)
    by_caller: dict[str, set[str]] = {}
    for row in rows:
        by_caller.setdefault(str(row["caller_id"]), set()).add(str(row["rule"]))
    # Handshake-era agents carry a session id; sessionless ones are grouped by baggage or by idle gap.
    assert by_caller["analyst"] == {"session"}
    assert by_caller["status-poller"] == {"session"}
    assert by_caller["support-bot"] == {"baggage"}
    assert by_caller["looping-agent"] == {"gap"}
    assert {str(r["run_id"]) for r in rows if r["caller_id"] == "support-bot"} == {"baggage:conv-1", "baggage:conv-2"}


def test_every_tool_call_of_the_log_belongs_to_exactly_one_run() -> None:
    calls = [json.loads(line) for line in DEMO_LOG.read_text().split("\n") if line.strip()]
    call_ids = {c["mcp_request_id"] for c in calls if c["event"] == "tool_call"}
    rows = runs_of(DEMO_LOG)
    grouped = [rid for row in rows for rid in row["request_ids"]]  # type: ignore[attr-defined]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == call_ids
    assert sum(int(str(row["calls"])) for row in rows) == len(call_ids)
