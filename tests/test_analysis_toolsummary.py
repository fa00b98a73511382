"""Per-tool stats from the index's summary: the same rows as polars over the JSON, without polars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcptrace.analysis import build_index, load, tool_stats
from mcptrace.cli import main
from mcptrace.logs._toolsummary import indexed_tool_stats
from mcptrace.testing import subprocess_env

STATS_COLUMNS = ["tool_name", "calls", "errors", "error_rate", "refused", "p50_ms", "p95_ms", "p99_ms"]

calls = st.lists(
    st.tuples(
        st.sampled_from(["alpha", "beta", "gamma", None]),
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e5, allow_nan=False)),
        st.sampled_from(["success", "error", None]),
        st.sampled_from(["tool_call", "tool_call", "response_sent", "request_refused", "rate_limited"]),
    ),
    max_size=80,
)


def write_log(path: Path, rows: list[tuple[Any, Any, Any, Any]], *, first: int = 0) -> Path:
    lines = []
    for i, (tool, duration, status, event) in enumerate(rows, start=first):
        record = {
            "timestamp": f"2026-11-25T14:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
            "event": event,
            "mcp_request_id": f"req-{i:05d}",
            "tool_name": tool,
            "duration_ms": duration,
            "status": status,
        }
        if event == "request_refused":
            record.update(status="refused", refusal_reason="rate_limited", count=1 + i % 3)
        lines.append(orjson.dumps(record))
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def json_rows(paths: list[Path], tools: list[str] | None = None) -> list[dict[str, Any]]:
    frame = load(paths, use_index=False).frame
    rows = tool_stats(frame).collect().to_dicts()
    return [r for r in rows if tools is None or r["tool_name"] in tools]


def assert_same_rows(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [r["tool_name"] for r in got] == [r["tool_name"] for r in expected]
    for g, e in zip(got, expected, strict=True):
        assert set(g) == set(e) == set(STATS_COLUMNS)
        for column in STATS_COLUMNS:
            # To the last digit: the summary's percentiles use polars' arithmetic.
            assert g[column] == e[column], column


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    older=st.one_of(st.none(), calls), newer=calls, only=st.sampled_from([None, ["beta"], ["alpha", "gamma"]])
)
def test_the_summary_answers_exactly_what_polars_computes_from_the_json(
    tmp_path_factory: pytest.TempPathFactory,
    older: list[tuple[Any, Any, Any, Any]] | None,
    newer: list[tuple[Any, Any, Any, Any]],
    only: list[str] | None,
) -> None:
    directory = tmp_path_factory.mktemp("summary")
    if older is not None:  # a rotated file and the live one: two segments to merge
        write_log(directory / "mcptrace.log.1", older)
    log = write_log(directory / "mcptrace.log", newer, first=len(older or []))
    build_index([log])
    found = indexed_tool_stats([log], tools=only)
    assert found is not None
    rows, report = found
    assert_same_rows(rows, json_rows([log], only))
    assert report.lines == len(older or []) + len(newer)


def test_without_a_fresh_index_there_is_no_summary_answer(tmp_path: Path) -> None:
    log = write_log(tmp_path / "x.log", [("alpha", 1.0, "success", "tool_call")])
    assert indexed_tool_stats([log]) is None
    build_index([log])
    assert indexed_tool_stats([log]) is not None
    write_log(tmp_path / "x.log", [("alpha", 1.0, "success", "tool_call")] * 2)
    assert indexed_tool_stats([log]) is None  # the file changed: the index is stale


def test_stats_from_the_index_loads_no_polars_and_reports_corrupt_lines(tmp_path: Path) -> None:
    log = write_log(tmp_path / "x.log", [("alpha", float(i), "success", "tool_call") for i in range(20)])
    log.write_bytes(log.read_bytes() + b"{not json\n")
    build_index([log])
    code = (
        "import json, sys\nfrom mcptrace.cli import main\n"
        f"main(['stats', {str(log)!r}, '--format', 'json'])\n"
        "print(json.dumps('polars' in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert out.returncode == 0, out.stderr
    *table, polars_loaded = out.stdout.strip().splitlines()
    assert json.loads(polars_loaded) is False
    rows = json.loads("\n".join(table))
    assert [(r["tool_name"], r["calls"], r["p50_ms"]) for r in rows] == [("alpha", 20, 9.5)]
    assert f"{log}:21" in out.stderr


def test_filters_the_summary_cannot_answer_go_to_the_parquet_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [("alpha", float(i), "success", "tool_call") for i in range(120)]
    log = write_log(tmp_path / "x.log", rows)
    build_index([log])
    assert main(["stats", str(log), "--format", "json", "--since", "2026-11-25T14:01:00Z"]) == 0
    assert [r["calls"] for r in json.loads(capsys.readouterr().out)] == [60]
    assert main(["stats", str(log), "--format", "json", "--tool", "beta"]) == 0
    assert json.loads(capsys.readouterr().out) == []
