"""Blocks judged on every core give the answer the whole file gives, wherever the blocks are cut."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcptrace.analysis import load, tool_stats
from mcptrace.logs._blocks import judged_blocks
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._parse import read_schema
from mcptrace.logs._sources import resolve_sources
from mcptrace.logs._toolpartials import COLUMNS, EVENTS, ToolPartials, partial, streamed_tool_stats
from tests.test_analysis_judge import log_lines

_SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _report(report: LoadReport) -> tuple[Any, ...]:
    return (
        report.lines,
        report.corrupt_count,
        [(c.line, c.reason) for c in report.corrupt],
        report.notes_count,
        [(c.line, c.reason) for c in report.notes],
        report.duplicates_count,
        [c.line for c in report.duplicates],
        report.newer_schema,
    )


def _log(folder: Path, lines: list[bytes], torn: bool) -> Path:
    log = folder / "mcptrace.log"
    log.write_bytes(b"".join(line + b"\n" for line in lines) + (b'{"timestamp":"2026-11' if torn else b""))
    return log


@_SETTINGS
@given(lines=log_lines(), torn=st.booleans(), block=st.integers(min_value=1, max_value=4096),
       workers=st.integers(min_value=1, max_value=3))
def test_the_rows_and_the_report_do_not_depend_on_where_blocks_are_cut(
    tmp_path_factory: Any, lines: list[bytes], torn: bool, block: int, workers: int
) -> None:
    log = _log(tmp_path_factory.mktemp("cut"), lines, torn)
    (source,) = resolve_sources([log])
    schema = read_schema()

    def judged(block_bytes: int, n: int) -> tuple[pl.DataFrame, tuple[Any, ...]]:
        report = LoadReport()
        frames = [rows for rows, _ in judged_blocks(
            source, schema=schema, report=report, reduce=lambda rows: rows, block_bytes=block_bytes, workers=n
        )]
        return pl.concat([pl.DataFrame(schema=schema), *frames], how="vertical"), _report(report)

    whole_rows, whole_report = judged(1 << 24, 1)
    rows, report = judged(block, workers)
    assert rows.equals(whole_rows, null_equal=True)
    assert report == whole_report


@_SETTINGS
@given(lines=log_lines(), torn=st.booleans(), block=st.integers(min_value=1, max_value=4096),
       workers=st.integers(min_value=1, max_value=3))
def test_summed_partials_are_the_stats_of_the_whole_log(
    tmp_path_factory: Any, lines: list[bytes], torn: bool, block: int, workers: int
) -> None:
    log = _log(tmp_path_factory.mktemp("sum"), lines, torn)
    loaded = load([log], columns=COLUMNS, events=EVENTS, use_index=False)  # what `stats` reads
    expected = tool_stats(loaded.frame).collect().to_dicts()
    rows, report = streamed_tool_stats([log], block_bytes=block, workers=workers)
    assert rows == expected
    assert _report(report) == _report(loaded.report)


@_SETTINGS
@given(lines=log_lines(), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_merging_the_partials_of_parts_equals_the_partial_of_the_whole(
    tmp_path_factory: Any, lines: list[bytes], cuts: list[int]
) -> None:
    log = _log(tmp_path_factory.mktemp("merge"), lines, False)
    rows = load([log], use_index=False).frame.collect()
    whole = ToolPartials()
    whole.add(partial(rows))
    parts = ToolPartials()
    bounds = sorted({0, rows.height, *(min(c, rows.height) for c in cuts)})
    for start, end in zip(bounds, bounds[1:], strict=False):
        parts.add(partial(rows[start:end]))
    assert parts.rows() == whole.rows() == tool_stats(rows.lazy()).collect().to_dicts()
