"""Loading logs: every kind of source, the pinned schema, and corrupt lines accounted for."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest
import zstandard

from mcptrace import LogReadError
from mcptrace.analysis import load, resolve_sources
from mcptrace.testing import subprocess_env


def record(i: int, **extra: object) -> dict[str, object]:
    return {
        "timestamp": f"2026-11-25T14:{i // 60:02d}:{i % 60:02d}.000Z",
        "level": "info",
        "event": "tool_call",
        "mcp_request_id": f"req-{i:04d}",
        "tool_name": "search_database",
        "caller_id": "agent-a",
        "duration_ms": float(i),
        "status": "success",
        "schema_version": 1,
        "downstream_calls": [
            {"service": "sqlite", "query_hash": "ab", "duration_ms": 1.5, "status": "success", "error": None}
        ],
        **extra,
    }


def write_lines(path: Path, lines: list[bytes | dict[str, object]]) -> Path:
    raw = [line if isinstance(line, bytes) else orjson.dumps(line) for line in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def request_ids(paths: list[str | Path]) -> list[str]:
    return load(paths).frame.collect().get_column("mcp_request_id").to_list()


def test_a_rotated_set_is_read_oldest_file_first(tmp_path: Path) -> None:
    write_lines(tmp_path / "mcptrace.log.2", [record(0), record(1)])
    write_lines(tmp_path / "mcptrace.log.1", [record(2)])
    write_lines(tmp_path / "mcptrace.log", [record(3)])
    assert request_ids([tmp_path / "mcptrace.log"]) == ["req-0000", "req-0001", "req-0002", "req-0003"]
    assert [s.path.name for s in resolve_sources([tmp_path])] == [
        "mcptrace.log.2",
        "mcptrace.log.1",
        "mcptrace.log",
    ]


def test_compressed_files_globs_and_directories_read_the_same_lines(tmp_path: Path) -> None:
    plain = write_lines(tmp_path / "a.log", [record(0), record(1)])
    (tmp_path / "b.log.gz").write_bytes(gzip.compress(plain.read_bytes().replace(b"req-000", b"req-100")))
    (tmp_path / "c.log.zst").write_bytes(
        zstandard.ZstdCompressor().compress(plain.read_bytes().replace(b"req-000", b"req-200"))
    )
    expected = ["req-0000", "req-0001", "req-1000", "req-1001", "req-2000", "req-2001"]
    assert request_ids([tmp_path]) == expected
    assert request_ids([str(tmp_path / "*.log*")]) == expected
    assert request_ids([tmp_path / "b.log.gz"]) == ["req-1000", "req-1001"]


def test_the_schema_is_pinned_unknown_fields_ignored_missing_fields_null(tmp_path: Path) -> None:
    minimal = {"timestamp": "2026-11-25T14:00:00Z", "event": "tool_call", "mcp_request_id": "req-x"}
    newer = record(
        5, schema_version=2, protocol_version="2026-07-28", client_name="c", shiny_new_field={"a": 1}
    )
    frame = load([write_lines(tmp_path / "x.log", [minimal, newer])]).frame.collect()
    assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert frame.schema["duration_ms"] == pl.Float64
    assert "shiny_new_field" not in frame.columns
    assert frame.get_column("duration_ms").to_list() == [None, 5.0]
    assert frame.get_column("caller_id").to_list() == [None, "agent-a"]


def test_corrupt_lines_are_counted_with_file_and_line_and_the_rest_is_kept(tmp_path: Path) -> None:
    lines: list[bytes | dict[str, object]] = [
        record(0),
        b"{not json",
        record(1),
        b"[1, 2]",
        record(2, duration_ms="slow"),
        {"event": "tool_call", "mcp_request_id": "req-no-time"},
        b"",
        record(3),
    ]
    path = write_lines(tmp_path / "bad.log", lines)
    path.write_bytes(path.read_bytes() + orjson.dumps(record(4))[:40])  # a truncated last line
    for loaded in (load([path]), load([path], columns=["mcp_request_id"])):
        frame = loaded.frame.collect()
        # A value of the wrong type is read as null and noted; its line stays a record.
        assert frame.get_column("mcp_request_id").to_list() == ["req-0000", "req-0001", "req-0002", "req-0003"]
        report = loaded.report
        assert report.corrupt_count == 4
        assert [(c.file, c.line) for c in report.corrupt] == [(str(path), n) for n in (2, 4, 6, 9)]
        reasons = [c.reason for c in report.corrupt]
        assert reasons[0].startswith("bad JSON") and reasons[1].startswith("not a JSON object")
        assert reasons[2] == "missing timestamp"
        assert reasons[3].startswith("truncated line")
        assert f"{path}:2" in report.summary()
    noted = load([path]).report
    assert [(n.line, n.reason) for n in noted.notes] == [(5, "duration_ms: expected float, got 'slow'; read as null")]


def test_a_damaged_compressed_file_is_reported_and_the_others_still_load(tmp_path: Path) -> None:
    write_lines(tmp_path / "good.log", [record(0)])
    (tmp_path / "broken.log.gz").write_bytes(gzip.compress(b'{"a":1}\n' * 100)[:30])
    loaded = load([tmp_path])
    assert loaded.frame.collect().height == 1
    assert any("broken.log.gz" in u for u in loaded.report.unreadable)


def test_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LogReadError, match="not found"):
        load([tmp_path / "nope.log"])
    with pytest.raises(LogReadError, match="no log files"):
        load([str(tmp_path / "*.log")])


def test_stdin_is_read_by_the_cli(tmp_path: Path) -> None:
    data = b"\n".join(orjson.dumps(record(i)) for i in range(3)) + b"\n"
    out = subprocess.run(
        [sys.executable, "-m", "mcptrace", "stats", "-", "--format", "json"],
        input=data,
        capture_output=True,
        env=subprocess_env(),
        timeout=60,
        cwd=tmp_path,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert rows[0]["tool_name"] == "search_database" and rows[0]["calls"] == 3


def test_a_directory_is_searched_below_hidden_data_dirs_but_never_into_the_index(tmp_path: Path) -> None:
    (tmp_path / ".mcptrace" / "logs").mkdir(parents=True)
    write_lines(tmp_path / ".mcptrace" / "logs" / "mcptrace.log", [record(0)])
    (tmp_path / ".mcptrace-index").mkdir()
    write_lines(tmp_path / ".mcptrace-index" / "stray.log", [record(9)])
    (tmp_path / "facts.json").write_text('{"not": "a log"}')
    assert request_ids([tmp_path]) == ["req-0000"]


def test_a_directory_scan_leaves_out_files_of_exported_spans(tmp_path: Path) -> None:
    write_lines(tmp_path / "mcptrace.log", [record(0), record(1)])
    spans = tmp_path / "spans"
    spans.mkdir()
    write_lines(spans / "spans.jsonl", [{"trace_id": "ab", "span_id": "cd", "name": "tools/call"}])
    write_lines(spans / "otlp.jsonl", [{"resourceSpans": []}])
    write_lines(tmp_path / "broken.log", [b"{not json", record(2)])
    assert sorted(s.path.name for s in resolve_sources([tmp_path])) == ["broken.log", "mcptrace.log"]
    loaded = load([tmp_path])
    assert loaded.report.corrupt_count == 1  # the broken log is read, and its bad line reported
    assert sorted(loaded.frame.collect()["mcp_request_id"]) == ["req-0000", "req-0001", "req-0002"]
    # Named on the command line, the same file is read, and its lines are reported as not log records.
    assert load([spans / "spans.jsonl"]).report.corrupt_count == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"\n\n\n", b"a\n\nb", b"a\n\nb\n", b'{"x":"a,b\\"c"}\n{"y":1}\n', b"x\r\ny\r\n", b"'q\n\"\n#c\n"],
)
def test_the_line_count_is_every_newline_plus_an_unterminated_last_line(tmp_path: Path, data: bytes) -> None:
    from mcptrace.logs._lines import count_lines

    path = tmp_path / "x.log"
    path.write_bytes(data)
    assert count_lines(path) == data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def mixed_events() -> list[bytes | dict[str, object]]:
    lines: list[bytes | dict[str, object]] = []
    for i in range(30):
        lines.append(record(i, event="request_received", duration_ms=None))
        lines.append(record(i, status="error" if i % 7 == 0 else "success"))
        lines.append(record(i, event="response_sent"))
    # The same event name spelled with a JSON escape is still that event.
    lines.append(orjson.dumps(record(99)).replace(b'"tool_call"', b'"tool\\u005fcall"'))
    return lines


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_an_event_filtered_load_keeps_exactly_the_rows_a_full_load_would(tmp_path: Path, newline: bytes) -> None:
    path = write_lines(tmp_path / "mixed.log", mixed_events())
    path.write_bytes(path.read_bytes().replace(b"\n", newline))
    columns = ["mcp_request_id", "tool_name", "duration_ms", "status"]
    narrowed = load([path], columns=columns, events=["tool_call"], use_index=False)
    everything = load([path], columns=columns, use_index=False).frame.filter(pl.col("event") == "tool_call")
    assert narrowed.frame.collect().equals(everything.collect())
    assert narrowed.frame.collect().height == 31
    assert narrowed.report.lines == 91 and narrowed.report.corrupt_count == 0


@pytest.mark.parametrize("users_value", [None, "8388608"])
def test_an_event_filtered_load_splits_lines_in_small_chunks_and_leaves_the_users_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, users_value: str | None
) -> None:
    # polars reads POLARS_CSV_CHUNK_SIZE when a query runs: set for the load, gone after it.
    if users_value is None:
        monkeypatch.delenv("POLARS_CSV_CHUNK_SIZE", raising=False)
    else:
        monkeypatch.setenv("POLARS_CSV_CHUNK_SIZE", users_value)
    path = write_lines(tmp_path / "mixed.log", mixed_events())
    assert load([path], columns=["duration_ms"], events=["tool_call"], use_index=False).frame.collect().height == 31
    assert os.environ.get("POLARS_CSV_CHUNK_SIZE") == users_value


def test_an_event_filtered_load_still_reports_each_corrupt_line_that_could_be_one_of_its_events(
    tmp_path: Path,
) -> None:
    lines = mixed_events()
    lines[4] = b'{"timestamp":"2026-11-25T14:00:01.000Z","event":"tool_call","duration_ms":"slow"}'
    lines.insert(10, b'{"timestamp":"2026-11-25T14:00:03.000Z","level":"info","event":"tool_c')
    path = write_lines(tmp_path / "mixed.log", lines)
    loaded = load([path], columns=["duration_ms"], events=["tool_call"], use_index=False)
    assert loaded.frame.collect().height == 31  # the slow duration is read as null, its call is kept
    assert sorted((c.line, c.reason.split(" (")[0]) for c in loaded.report.corrupt) == [(11, "bad JSON")]
    assert [n.line for n in loaded.report.notes] == [5]
