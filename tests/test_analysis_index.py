"""The index: used only while it matches its sources, kept across rotation, built on repeated queries."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from mcptrace.analysis import IndexReport, build_index, load, tool_stats
from mcptrace.cli import main
from mcptrace.logs import _index as index_module
from mcptrace.logs._chainstore import lookup_lines, merge_parts, write_store
from mcptrace.logs._index import auto_index
from mcptrace.logs._lookup import lookup
from mcptrace.logs._toolsummary import indexed_tool_stats


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


def varied_log(path: Path, n: int, *, prefix: str = "req") -> list[str]:
    """`n` requests over two days, several tools, some failures, a corrupt line and a line without an id."""
    lines = []
    for i in range(n):
        rid = f"{prefix}-{i * 7919 % 10007:05d}"  # ids out of order, as in a real log
        stamp = f"2026-11-{24 + i * 2 // n}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        base = {"timestamp": stamp, "mcp_request_id": rid, "tool_name": ["a", "b", "c"][i % 3]}
        lines.append(orjson.dumps({**base, "event": "request_received"}))
        lines.append(
            orjson.dumps(
                {**base, "event": "tool_call", "duration_ms": i % 97 / 3, "status": "error" if i % 11 else "success"}
            )
        )
        if i == n // 2:
            lines.append(b'{"timestamp": "2026-11-24T10:00:00.000Z", "event": ')  # torn by a crash
            lines.append(orjson.dumps({"timestamp": stamp, "event": "server_started"}))
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return [orjson.loads(line)["mcp_request_id"] for line in lines[::50] if b"mcp_request_id" in line]


def test_an_index_built_block_by_block_answers_exactly_as_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "x.log"
    ids = varied_log(log, 600)
    monkeypatch.setattr(index_module, "RUN_BYTES", 8 * 1024)  # several sorted runs, merged at the end
    report = build_index([log], block_bytes=4 * 1024)
    assert report.blocks > 20
    assert report.corrupt_count == 1 and report.corrupt[0].line == 603
    parquet = list(report.directory.glob("data/date=*/*.parquet"))
    assert sum(pq.ParquetFile(p).metadata.num_row_groups for p in parquet) > 20
    indexed, unindexed = load([log]), load([log], use_index=False)
    assert indexed.report.bytes_read == 0 and unindexed.report.bytes_read > 0
    assert indexed.report.corrupt_count == unindexed.report.corrupt_count == 1
    assert_frame_equal(indexed.frame.collect(), unindexed.frame.collect())
    assert_frame_equal(tool_stats(indexed.frame).collect(), tool_stats(unindexed.frame).collect())
    summary = indexed_tool_stats([log])
    assert summary is not None and summary[0] == tool_stats(unindexed.frame).collect().to_dicts()
    for rid in ids:
        hit, scan = lookup([log], value=rid), lookup([log], value=rid, use_index=False)
        assert hit.from_index and hit.records == scan.records and len(hit.records) == 2, rid


def test_two_logs_in_one_folder_keep_their_own_segments(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a_ids, b_ids = varied_log(a, 100, prefix="a"), varied_log(b, 100, prefix="b")
    build_index([a])
    build_index([b])
    for log, rid in ((a, a_ids[1]), (b, b_ids[1])):
        assert lookup([log], value=rid).from_index, log
        assert load([log]).report.bytes_read == 0, log
    a.unlink()  # a segment whose file is gone is dropped by the next index in that folder
    report = build_index([b])
    assert report.reused == [str(b)]
    assert not list(report.directory.glob(f"data/date=*/{segment_key_of(report, a)}-*"))
    assert len(list((report.directory / "segments").iterdir())) == 1


def segment_key_of(report: IndexReport, log: Path) -> str:
    manifest = orjson.loads((report.directory / "manifest.json").read_bytes())
    return next((k for k, v in manifest["segments"].items() if v["path"] == str(log.resolve())), "none")


def test_an_interrupted_index_leaves_no_part_of_its_segment(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    varied_log(log, 300)

    def interrupt(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index([log], block_bytes=4 * 1024, progress=interrupt)
    leftovers = [p for p in (tmp_path / ".mcptrace-index").rglob("*") if p.is_file()]
    assert leftovers == []
    assert not lookup([log], value="req-00000").from_index
    assert build_index([log]).rows == load([log], use_index=False).frame.collect().height


def record(rid: str, i: int) -> bytes:
    stamp = "2026-11-24T10:00:00.000Z"
    return orjson.dumps({"timestamp": stamp, "event": "tool_call", "mcp_request_id": rid, "message": f"line {i}"})


def test_more_runs_than_one_merge_takes_are_merged_in_rounds(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    ids = [f"id-{i * 37 % 101:03d}" for i in range(400)]
    rows = [(rid, record(rid, i)) for i, rid in enumerate(ids)]
    for part in range(9):  # nine sorted runs, merged three at a time
        write_store(store, sorted(rows[part::9], key=lambda r: r[0]), part=part, block_bytes=64)
    merge_parts(store, fan_in=3)
    assert [p.name for p in store.glob("chains-*.idx")] == ["chains-all.idx"]
    for rid in ("id-000", "id-050", "id-100"):
        # Equal ids come in the order of the runs, and within a run in the order they were written.
        positions = sorted((i for i, (r, _) in enumerate(rows) if r == rid), key=lambda i: (i % 9, i))
        assert [r["message"] for r in lookup_lines(store, rid)] == [f"line {i}" for i in positions]


@pytest.mark.parametrize("indexed", [False, True])
def test_fields_no_line_carries_are_typed_null_columns_that_every_operation_accepts(
    tmp_path: Path, indexed: bool,
) -> None:
    log = tmp_path / "mcptrace.log"
    write(log, 0, 40)
    if indexed:
        build_index([log])
    loaded = load([log], use_index=indexed).frame
    expected = load([log], columns=["tool_name", "status", "duration_ms"], use_index=indexed).frame
    schema = loaded.collect_schema()
    # Never written by `write`: a text, a number and a nested field keep their pinned types, all null.
    assert schema["error"] == pl.String and schema["count"] == pl.Int64
    assert isinstance(schema["downstream_calls"], pl.List)
    data = loaded.sort("duration_ms", descending=True).filter(pl.col("duration_ms") > 9).collect()
    assert data.height == 30 and data.get_column("duration_ms")[0] == 39.0
    assert data.select(pl.col("error", "count", "downstream_calls").null_count()).row(0) == (30, 30, 30)
    # The fields that are there read as when they are asked for alone.
    assert_frame_equal(loaded.select(expected.collect_schema().names()).collect(), expected.collect())
