"""The index: used only while it matches its sources, kept across rotation, built on repeated queries."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pytest

from mcptrace.analysis import build_index, load, tool_stats
from mcptrace.cli import main
from mcptrace.logs._index import auto_index
from mcptrace.logs._lookup import lookup


def write(path: Path, first: int, n: int) -> None:
    with path.open("ab") as fh:
        for i in range(first, first + n):
            fh.write(
                orjson.dumps(
                    {
                        "timestamp": f"2026-11-{24 + i % 2}T10:00:{i % 60:02d}.000Z",
                        "event": "tool_call",
                        "mcp_request_id": f"req-{i:05d}",
                        "tool_name": "search",
                        "duration_ms": float(i),
                        "status": "success",
                    }
                )
                + b"\n"
            )


def test_a_rotation_reuses_the_rotated_files_segment(tmp_path: Path) -> None:
    log = tmp_path / "mcptrace.log"
    write(log, 0, 50)
    first = build_index([log])
    assert first.indexed == [str(log)]
    log.rename(tmp_path / "mcptrace.log.1")
    write(log, 50, 10)
    second = build_index([log])
    assert second.reused == [str(tmp_path / "mcptrace.log.1")] and second.indexed == [str(log)]
    assert second.rows == 60
    hit = lookup([log], value="req-00007")
    assert hit.from_index and [r["mcp_request_id"] for r in hit.records] == ["req-00007"]


def test_the_parquet_dataset_is_hive_partitioned_by_date_for_other_engines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    write(log, 0, 40)
    report = build_index([log])
    pattern = str(report.directory / "data" / "**" / "*.parquet")
    query = f"select date::varchar, count(*) from read_parquet('{pattern}', hive_partitioning = 1) group by 1"
    assert sorted(duckdb.sql(query).fetchall()) == [("2026-11-24", 20), ("2026-11-25", 20)]
    for part in report.directory.glob("data/date=*/*.parquet"):
        day = int(part.parent.name[-2:])
        in_the_log = [f"req-{i:05d}" for i in range(40) if 24 + i % 2 == day]
        assert pl.read_parquet(part).get_column("mcp_request_id").to_list() == in_the_log, part


def test_a_changed_source_is_read_from_json_until_indexed_again(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    write(log, 0, 10)
    build_index([log])
    write(log, 10, 5)
    assert load([log]).report.bytes_read > 0  # read from the JSON: the index is stale
    assert tool_stats(load([log]).frame).collect()["calls"].to_list() == [15]
    assert not lookup([log], value="req-00012").from_index


def test_large_logs_are_indexed_on_their_second_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "x.log"
    write(log, 0, 30)
    assert auto_index([log], min_bytes=1) is None  # first query: noted
    built = auto_index([log], min_bytes=1)  # second query of the same files: indexed
    assert built is not None and built.rows == 30
    assert auto_index([log], min_bytes=1) is None  # fresh: nothing to do
    assert main(["stats", str(log), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["calls"] == 30
