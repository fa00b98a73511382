"""The lnav format (`deploy/lnav/mcptrace.json`) with Debian's lnav, on the sample logs.

The format is installed into a temporary HOME with `lnav -i`, as a user would;
lnav then reads each sample log headless (`lnav -n`), answers SQL over its
`mcptrace_log` table, and must agree line for line with what polars reads from
the same file: the counts per level and event, and one request's lines found by
its id (lnav's operation id).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
FORMAT = ROOT / "deploy" / "lnav" / "mcptrace.json"
SAMPLES = [
    ROOT / "sample_logs" / "incidents" / "mcptrace.log",
    ROOT / "sample_logs" / "demo-v2.jsonl",
    ROOT / "sample_logs" / "v1-sample.jsonl",
]
LNAV = shutil.which("lnav")
pytestmark = pytest.mark.skipif(LNAV is None, reason="lnav is not installed (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME where `lnav -i` installed the format, and nothing else."""
    home = tmp_path_factory.mktemp("lnav-home")
    done = run(home, "-i", str(FORMAT))
    assert done.returncode == 0, done.stderr
    assert (home / ".lnav" / "formats" / "installed" / "mcptrace_log.json").exists()
    return home


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert LNAV is not None
    env = {**os.environ, "HOME": str(home), "TZ": "UTC", "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run([LNAV, *args], env=env, capture_output=True, text=True, timeout=60)


def sql(home: Path, query: str, log: Path) -> list[dict[str, Any]]:
    """Rows of an SQL query over `log`, as lnav's `:write-json-to -` writes them."""
    done = run(home, "-n", "-c", f";{query}", "-c", ":write-json-to -", str(log))
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def polars_lines(log: Path) -> pl.DataFrame:
    return pl.read_ndjson(log, infer_schema_length=None)


@pytest.mark.parametrize("log", SAMPLES, ids=lambda p: p.name)
def test_lnav_counts_every_line_per_level_and_event_as_polars_reads_them(home: Path, log: Path) -> None:
    rows = sql(home, "SELECT log_level, event, count(*) AS n FROM mcptrace_log GROUP BY log_level, event", log)
    from_lnav = {(r["log_level"], r["event"]): r["n"] for r in rows}
    counted = polars_lines(log).group_by("level", "event").len()
    from_polars = {(r["level"], r["event"]): r["len"] for r in counted.iter_rows(named=True)}
    assert from_lnav == from_polars
    assert sum(from_lnav.values()) == sum(1 for line in log.read_text().splitlines() if line.strip())


def test_lnav_finds_a_failed_requests_lines_by_its_id_with_their_times(home: Path) -> None:
    log = SAMPLES[0]
    lines = polars_lines(log)
    failed = lines.filter((pl.col("event") == "tool_call") & (pl.col("status") == "error"))
    for request_id in failed["mcp_request_id"].head(3):
        expected = lines.filter(pl.col("mcp_request_id") == request_id).select("timestamp", "event", "status")
        rows = sql(home, "SELECT log_opid, log_time, log_level, event, status FROM mcptrace_log "
                         f"WHERE mcp_request_id = '{request_id}' ORDER BY log_line", log)
        assert [r["log_opid"].strip() for r in rows] == [request_id] * expected.height  # the operation id
        assert [(r["log_time"], r["event"], r["status"]) for r in rows] == [
            (ts.replace("T", " ").removesuffix("Z"), event, status) for ts, event, status in expected.iter_rows()
        ]
        assert {r["log_level"] for r in rows} >= {"warning"}


def test_lnav_shows_one_readable_line_per_record(home: Path) -> None:
    log = SAMPLES[0]
    done = run(home, "-n", str(log))
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stdout.splitlines() if line and not line.startswith(" ")]
    assert len(shown) == polars_lines(log).height  # no field spills onto lines of its own but the rare ones
    call = polars_lines(log).filter(pl.col("event") == "tool_call").row(0, named=True)
    line = next(s for s in shown if call["mcp_request_id"] in s and " tool_call " in s)
    assert line.startswith(f"{call['timestamp']} INFO    tool_call")
    for value in (call["caller_id"], call["method"], call["tool_name"], call["status"]):
        assert f" {value} " in line
