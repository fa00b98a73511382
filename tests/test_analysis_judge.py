"""One judgement per line, whatever reads it: the same counts from every command, indexed or not.

Also: bytes that are not UTF-8 crash nothing, a damaged index falls back to the
JSON logs and says so once, and a refused request is counted as refused (never
as a failure), whoever the caller and whatever the log version.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcptrace.analysis import (
    build_index,
    error_messages,
    error_sources,
    load,
    loops,
    method_stats,
    outcomes,
    refused_requests,
    report_text,
    runs,
    sessions,
    tool_stats,
    top_callers,
)
from mcptrace.testing import subprocess_env


def mcptrace(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcptrace", *map(str, args)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )


def call(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": f"2026-11-25T14:00:{i % 60:02d}.{i // 60:03d}Z",
        "level": "info",
        "event": "tool_call",
        "schema_version": 3,
        "mcp_request_id": f"req-{i:04d}",
        "tool_name": "search",
        "caller_id": "agent-a",
        "session_id": "s1",
        "duration_ms": 10.0 + i,
        "status": "success",
        **extra,
    }


def write(path: Path, lines: list[bytes | dict[str, Any]]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines))
    return path


def json_out(*args: str | Path) -> Any:
    out = mcptrace(*args, "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_number_written_as_text_is_the_same_call_for_every_command(tmp_path: Path) -> None:
    log = write(
        tmp_path / "x.log",
        [
            call(0),
            call(1, duration_ms="12.5"),
            call(2, status={"code": "ok"}),  # not a status: read as null, noted, still a call
            call(3, status="error", error="boom"),
        ],
    )
    for index in (False, True):
        if index:
            build_index([log])
        (stats,) = json_out("stats", log)
        (by_caller,) = json_out("stats", "--by", "caller", log)
        runs = json_out("runs", log)
        errors = json_out("errors", log)
        assert stats["calls"] == by_caller["calls"] == sum(r["calls"] for r in runs) == 4
        assert stats["errors"] == by_caller["errors"] == errors["by_tool"][0]["errors"] == 1
        assert stats["p50_ms"] == 12.25  # 10, 12.5, 12, 13
    warned = mcptrace("stats", log, "--no-index").stderr
    assert f"{log}:3: status: expected str, got dict; read as null" in warned


def test_bytes_that_are_not_utf8_crash_nothing_and_are_reported_with_their_line(tmp_path: Path) -> None:
    lines: list[bytes | dict[str, Any]] = [call(i) for i in range(6)]
    lines[2] = orjson.dumps(call(2)).replace(b"search", b"se\xffarch")
    log = write(tmp_path / "x.log", lines)
    for command in ("stats", "errors", "loops", "runs", "sessions"):
        out = mcptrace(command, log, "--no-index")
        assert out.returncode == 0, out.stderr
        assert f"{log}:3: not UTF-8" in out.stderr
    assert mcptrace("index", log).returncode == 0
    (stats,) = json_out("stats", log)
    assert stats["calls"] == 5
    out = mcptrace("chain", "req-0004", log)
    assert out.returncode == 0 and "req-0004" in out.stdout


def test_a_bad_byte_costs_only_its_own_line_and_a_written_replacement_character_is_text(tmp_path: Path) -> None:
    lines: list[bytes | dict[str, Any]] = [call(i) for i in range(8)]
    lines[1] = orjson.dumps(call(1)).replace(b"search", b"se\xffarch")
    lines[4] = orjson.dumps(call(4, tool_name="se\ufffdarch"))  # U+FFFD written as UTF-8: a tool name like any
    lines[6] = orjson.dumps(call(6)).replace(b"agent-a", b"agent-\xe2\x82")  # a sequence cut short
    log = write(tmp_path / "x.log", lines)
    loaded = load([log], use_index=False)
    tools = loaded.frame.collect().get_column("tool_name").to_list()
    assert tools == ["search", "search", "search", "se\ufffdarch", "search", "search"]
    assert [(c.line, c.reason) for c in loaded.report.corrupt] == [(2, "not UTF-8"), (7, "not UTF-8")]


def test_an_index_that_cannot_be_read_falls_back_to_the_json_and_says_so_once(tmp_path: Path) -> None:
    log = write(tmp_path / "x.log", [call(i) for i in range(20)])
    report = build_index([log])
    for part in report.directory.glob("data/**/*.parquet"):
        part.write_bytes(b"PAR1 this is not parquet any more")
    loaded = load([log], columns=["tool_name"])
    assert loaded.frame.collect().height == 20
    assert loaded.report.summary().count("cannot be read") == 1
    out = mcptrace("stats", log, "--by", "caller", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["calls"] == 20
    assert out.stderr.count("read the JSON logs instead") == 1


def refusals() -> list[bytes | dict[str, Any]]:
    """The same refusals as version 3 writes them (aggregated) and as versions 1 and 2 wrote them."""
    v3 = {"level": "warning", "event": "request_refused", "schema_version": 3, "status": "refused"}
    return [
        call(0),
        call(1, status="error", error="boom"),
        # An authenticated caller rate-limited 7 times within a second: one line.
        {**v3, "timestamp": "2026-11-25T14:00:02.000Z", "mcp_request_id": "req-r1", "caller_id": "agent-a",
         "tool_name": "search", "refusal_reason": "rate_limited", "count": 7, "last_request_id": "req-r7"},
        # An unauthenticated client: no caller, no tool.
        {**v3, "timestamp": "2026-11-25T14:00:03.000Z", "mcp_request_id": "req-u1",
         "refusal_reason": "unauthenticated", "http_status": 401},
        # Version 2: one line per refusal, under the old event names.
        {"timestamp": "2026-11-25T14:00:04.000Z", "event": "rate_limited", "schema_version": 2,
         "mcp_request_id": "req-v2", "caller_id": "agent-b", "tool_name": "search", "limit_scope": "suspended",
         "status": "error"},
        {"timestamp": "2026-11-25T14:00:05.000Z", "event": "auth_failed", "schema_version": 2,
         "mcp_request_id": "req-v2a", "http_status": 401},
    ]


def test_refused_requests_are_counted_next_to_failures_for_every_caller_and_version(tmp_path: Path) -> None:
    log = write(tmp_path / "x.log", refusals())
    frame = load([log]).frame
    by_tool = {r["tool_name"]: r for r in tool_stats(frame).collect().to_dicts()}
    assert (by_tool["search"]["calls"], by_tool["search"]["errors"], by_tool["search"]["refused"]) == (2, 1, 8)
    assert (by_tool[None]["calls"], by_tool[None]["refused"], by_tool[None]["error_rate"]) == (0, 2, None)
    callers = {r["caller_id"]: r["refused"] for r in top_callers(frame).collect().to_dicts()}
    assert callers == {"agent-a": 7, "agent-b": 1, None: 2}
    reasons = {(r["tool_name"], r["refusal_reason"]): r["count"] for r in refused_requests(frame).collect().to_dicts()}
    assert reasons == {("search", "rate_limited"): 7, ("search", "suspended"): 1, (None, "unauthenticated"): 2}
    for index in (False, True):
        if index:
            build_index([log])
        stats = {r["tool_name"]: r for r in json_out("stats", log)}
        assert stats["search"]["refused"] == 8 and stats["search"]["errors"] == 1
        errors = json_out("errors", log)
        assert sum(r["refused"] for r in errors["by_tool"]) == 10
        assert sum(r["count"] for r in errors["refused"]) == 10
    text = report_text([log])
    assert "search" in text and "8 refused" in text


# --- Indexed and unindexed answers are identical, over generated logs with malformed lines ---------------

_TOOLS = ["search", "fetch", None]
_CALLERS = ["agent-a", "agent-b", None]
_MALFORMED = [
    b"{not json",
    b'{"timestamp":"2026-11-25T14:00:00.000Z","event":"tool_c',  # torn by a crash
    b'{"timestamp":"2026-11-25T14:00:00.000Z","event":"tool_call","tool_name":"se\xff"}',  # not UTF-8
    b'{"timestamp":"2026-11-25T14:00:00.000Z","event":"tool_call","tool_name":{"x":1}}',  # object for text
    b'{"event":"tool_call","tool_name":"search"}',  # no timestamp
    b'{"timestamp":"yesterday","event":"tool_call"}',
    b"[1, 2]",
    b"   ",
]


@st.composite
def log_lines(draw: st.DrawFn) -> list[bytes]:
    """Lines as the server writes them (with ties in time, numbers as text, refusals), and damage."""
    lines = []
    for i in range(draw(st.integers(min_value=0, max_value=40))):
        second = draw(st.integers(min_value=0, max_value=5))  # few distinct times: many ties
        naive = i % 7 == 3 and draw(st.booleans())  # no offset: read as UTC everywhere
        stamp = f"2026-11-25T14:00:{second:02d}.000" + ("" if naive else "Z")
        kind = draw(st.sampled_from(["call", "call", "call", "response", "refused", "rate_limited"]))
        base = {
            "timestamp": stamp,
            "mcp_request_id": f"req-{draw(st.integers(min_value=0, max_value=30)):03d}",
            "caller_id": draw(st.sampled_from(_CALLERS)),
            "session_id": draw(st.sampled_from(["s1", "s2", None])),
            "tool_name": draw(st.sampled_from(_TOOLS)),
            "schema_version": 3,
        }
        if kind == "call":
            duration: Any = draw(st.sampled_from([1.0, 2.5, 7.25, 30.0, None, "12.5", True]))
            status = draw(st.sampled_from(["success", "success", "error"]))
            record = {**base, "event": "tool_call", "duration_ms": duration, "status": status,
                      "error": "boom" if status == "error" else None,
                      "arguments_hash": draw(st.sampled_from(["a1", "a2"])), "result_hash": "r1"}
        elif kind == "response":
            record = {**base, "event": "response_sent", "method": "tools/list", "status": "success",
                      "duration_ms": 1.0}
        elif kind == "refused":
            record = {**base, "event": "request_refused", "status": "refused", "refusal_reason": "rate_limited",
                      "count": draw(st.integers(min_value=1, max_value=9))}
        else:
            record = {**base, "event": "rate_limited", "schema_version": 2, "status": "error"}
        lines.append(orjson.dumps(record))
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            lines.append(draw(st.sampled_from(_MALFORMED)))
        if lines and draw(st.integers(min_value=0, max_value=14)) == 0:
            lines.append(draw(st.sampled_from(lines)))  # written twice (a replayed line)
        if draw(st.integers(min_value=0, max_value=19)) == 0:
            lines.append(orjson.dumps({**base, "event": "tool_call", "schema_version": 9}))
    return lines


def _answers(paths: list[Path]) -> dict[str, Any]:
    loaded = load(paths)
    frame = loaded.frame.collect().lazy()
    queries = {
        "tool_stats": tool_stats(frame),
        "by_caller": top_callers(frame, limit=100),
        "by_method": method_stats(frame),
        "error_messages": error_messages(frame),
        "error_sources": error_sources(frame),
        "refused": refused_requests(frame),
        "runs": runs(frame),
        "loops": loops(frame, threshold=2),
        "loops_per_caller": loops(frame, by=("caller_id",), threshold=2),
        "sessions": sessions(frame),
        "outcomes": outcomes(frame),
    }
    out: dict[str, Any] = {name: q.collect().to_dicts() for name, q in queries.items()}
    report = loaded.report
    # An index keeps the first 50 examples of each kind per file; every line is counted.
    out["report"] = (
        report.lines,
        report.corrupt_count,
        [(c.file, c.line, c.reason) for c in report.corrupt][:50],
        report.duplicates_count,
        [(c.file, c.line) for c in report.duplicates][:50],
        report.newer_schema,
    )
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(older=log_lines(), newer=log_lines(), torn=st.booleans())
def test_indexed_and_unindexed_answers_are_identical(
    tmp_path_factory: Any, older: list[bytes], newer: list[bytes], torn: bool
) -> None:
    folder = tmp_path_factory.mktemp("same")
    rotated = folder / "mcptrace.log.1"
    rotated.write_bytes(b"".join(line + b"\n" for line in older))
    current = folder / "mcptrace.log"
    current.write_bytes(b"".join(line + b"\n" for line in newer) + (b'{"timestamp":"2026-11' if torn else b""))
    paths = [rotated, current]
    from_json = _answers(paths)
    build_index(paths)
    from_index = _answers(paths)
    for name, answer in from_json.items():
        assert from_index[name] == answer, name
    from mcptrace.logs._toolsummary import indexed_tool_stats

    summary = indexed_tool_stats(paths)
    assert summary is not None
    assert summary[0] == from_json["tool_stats"]


def test_an_exact_repeat_of_a_line_is_counted_once_and_reported(tmp_path: Path) -> None:
    lines: list[bytes | dict[str, Any]] = [call(i) for i in range(10)]
    lines.insert(3, call(1))  # the same line again, two lines later
    lines.append(call(0))
    lines.append(call(0, duration_ms=99.0))  # same request id, another line: not a repeat
    log = write(tmp_path / "x.log", lines)
    for index in (False, True):
        if index:
            build_index([log])
        loaded = load([log])
        assert loaded.frame.collect().height == 11
        assert [(d.file, d.line) for d in loaded.report.duplicates] == [(str(log), 4), (str(log), 12)]
        assert "2 exact duplicate line(s) counted once" in loaded.report.summary()
        (stats,) = json_out("stats", log)
        assert stats["calls"] == 11


def test_a_repeat_in_a_later_block_of_the_file_is_found_too(tmp_path: Path) -> None:
    from mcptrace.logs._load import load as load_blocks

    lines: list[bytes | dict[str, Any]] = [call(i) for i in range(50)]
    lines.append(call(2))
    log = write(tmp_path / "x.log.gz", [])
    import gzip

    log.write_bytes(gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines)))
    loaded = load_blocks([log])
    assert loaded.frame.collect().height == 50 and loaded.report.duplicates_count == 1


def test_lines_of_a_newer_schema_are_read_counted_and_warned_once(tmp_path: Path) -> None:
    log = write(tmp_path / "x.log", [call(0), call(1, schema_version=4), call(2, schema_version=4), call(3)])
    for index in (False, True):
        if index:
            build_index([log])
        out = mcptrace("stats", log, "--by", "caller")
        assert out.returncode == 0, out.stderr
        assert out.stderr.count("2 line(s) of schema v4: upgrade mcptrace") == 1
        assert load([log]).frame.collect().height == 4


def test_warnings_name_an_indexed_file_as_it_is_called_now(tmp_path: Path) -> None:
    log = write(tmp_path / "mcptrace.log", [call(0), b"{torn", call(1)])
    build_index([log])
    rotated = log.rename(tmp_path / "mcptrace.log.1")
    (tmp_path / "mcptrace.log").write_bytes(b"")
    loaded = load([tmp_path])
    assert [(c.file, c.line) for c in loaded.report.corrupt] == [(str(rotated), 2)]


def test_a_timestamp_without_an_offset_is_utc_in_every_command(tmp_path: Path) -> None:
    log = write(tmp_path / "x.log", [call(0, timestamp="2026-11-25T14:00:00.250"), call(1)])
    rows = load([log]).frame.collect()
    assert rows.height == 2 and str(rows["timestamp"][0]) == "2026-11-25 14:00:00.250000+00:00"
    (stats,) = json_out("stats", log, "--since", "2026-11-25T14:00:00.200Z", "--no-index")
    assert stats["calls"] == 2
    chained = json_out("chain", "req-0000", log, "--no-index")
    assert chained[0]["timestamp"] == "2026-11-25T14:00:00.250"


# --- The bulk reading (polars) and the line-by-line judge (plain Python) apply the same rules ---------------

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    # Below 2**53: a whole float beyond it in an integer field may be read with other last digits.
    st.floats(min_value=-(2.0**53), max_value=2.0**53, allow_nan=False, width=32),
    st.sampled_from(["12.5", "7", "3.0", "slow", "", "error", "success"]),
    st.just({"code": "ok"}),
    st.just([1, 2]),
)


@st.composite
def judged_lines(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if draw(st.integers(min_value=0, max_value=9)):
        record["timestamp"] = draw(
            st.sampled_from(["2026-11-25T14:00:00.000Z", "2026-11-25T15:00:00+01:00", "2026-11-25T14:00:00", "x"])
        )
    if draw(st.integers(min_value=0, max_value=9)):
        record["event"] = draw(st.sampled_from(["tool_call", 5, {"a": 1}]))
    for name in ("duration_ms", "error_code", "status", "tool_name"):
        if draw(st.booleans()):
            record[name] = draw(_VALUES)
    return record


def _polars_text(value: Any) -> str:
    import polars as pl

    line = orjson.dumps({"v": value}).decode()
    text: str = pl.DataFrame({"l": [line]}).select(pl.col("l").str.json_decode(pl.Struct({"v": pl.String})))[0, 0]["v"]
    return text


def _as_read(value: Any, kind: str) -> Any:
    """What the judge's repaired value is once read: numbers as numbers, scalars where text belongs as JSON text."""
    if value is None:
        return None
    if kind == "str":  # as polars' JSON reader writes a scalar: true, 7, 1.5, 0 (for 0.0)
        return value if isinstance(value, str) else _polars_text(value)
    return float(value) if kind == "float" else int(value)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=judged_lines(), compressed=st.booleans())
def test_the_bulk_reader_and_the_line_judge_agree_on_every_line(
    tmp_path_factory: Any, record: dict[str, Any], compressed: bool
) -> None:
    import gzip

    from mcptrace.logs._judge import judge_line, parse_timestamp

    line = orjson.dumps(record)
    folder = tmp_path_factory.mktemp("one")
    path = folder / ("x.log.gz" if compressed else "x.log")  # the block path, or the one-pass scan
    path.write_bytes(gzip.compress(line + b"\n") if compressed else line + b"\n")
    loaded = load([path], use_index=False)
    rows = loaded.frame.collect().to_dicts()
    verdict = judge_line(line)
    if verdict.record is None:
        assert rows == [] and loaded.report.corrupt_count == 1
        return
    assert len(rows) == 1 and loaded.report.corrupt_count == 0
    (row,) = rows
    assert row["timestamp"] == parse_timestamp(verdict.record["timestamp"])
    assert row["event"] == _as_read(verdict.record["event"], "str")
    kinds = {"duration_ms": "float", "error_code": "int", "status": "str", "tool_name": "str"}
    for name, kind in kinds.items():
        assert row[name] == _as_read(verdict.record.get(name), kind), name
    assert loaded.report.notes_count == len(verdict.notes)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=400))
def test_repeats_are_found_across_many_small_blocks_as_plain_python_finds_them(
    tmp_path_factory: Any, picks: list[int]
) -> None:
    """An index read in blocks of a line or two reports the same repeats as a set of the lines read so far."""
    log = write(tmp_path_factory.mktemp("many") / "x.log", [call(i) for i in picks])
    seen: set[int] = set()
    repeats = []
    for number, i in enumerate(picks, start=1):
        if i in seen:
            repeats.append(number)
        seen.add(i)
    report = build_index([log], block_bytes=300)
    assert report.blocks > len(picks) // 2
    loaded = load([log])
    assert loaded.frame.collect().height == len(seen)
    assert loaded.report.duplicates_count == len(repeats)
    assert [d.line for d in loaded.report.duplicates] == repeats[:50]


def test_the_repeat_check_holds_eight_bytes_a_distinct_line_in_a_few_sorted_tiers() -> None:
    """However many blocks, every earlier line is still found, and memory is the distinct lines only."""
    import numpy as np

    from mcptrace.logs._loadreport import LoadReport
    from mcptrace.logs._parse import HASH, NUMBER, Seen
    from mcptrace.logs._sources import Source

    seen = Seen(tier_cap=64)
    report = LoadReport(files=["x"])
    source = Source(Path("x"), "x")
    rng = np.random.default_rng(7)
    values = rng.integers(0, 500, size=3000).astype(np.uint64)
    kept = []
    for start in range(0, len(values), 17):
        block = values[start : start + 17]
        numbers = np.arange(start + 1, start + 1 + len(block), dtype=np.int64)
        rows = pl.DataFrame({NUMBER: numbers, HASH: block, "event": ["tool_call"] * len(block)})
        kept.extend(seen.drop_repeats(rows, source=source, report=report).get_column(HASH).to_list())
    assert sorted(kept) == sorted(set(values.tolist()))
    assert len(kept) == len(set(kept))
    assert report.duplicates_count == len(values) - len(kept)
    assert seen.count == len(kept)
