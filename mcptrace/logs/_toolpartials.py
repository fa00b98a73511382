"""Per-tool stats over whole JSON logs, summed block by block: 8 bytes a call held, never the rows.

Each block's judged rows are reduced on its worker (`_blocks`) to a partial per
tool: calls, errors, refusals and the calls' durations. Counts add up; the
durations are kept (percentiles do not add up) and the percentiles computed at
the end over all of them, as the index's summary does (`_toolsummary`), so the
answer is the same whether the log is indexed or not and wherever the blocks
are cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace.logs._aggregates import QUANTILES
from mcptrace.logs._blocks import BLOCK_BYTES, judged_blocks
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._parse import read_schema
from mcptrace.logs._refusals import REFUSAL_COLUMNS, REFUSAL_EVENTS
from mcptrace.logs._sources import Paths, Progress, resolve_sources
from mcptrace.logs._toolsummary import quantile, summary_input

__all__ = ["COLUMNS", "EVENTS", "ToolPartials", "streamed_tool_stats"]

#: What the partials read of each line, besides what a `where` names.
COLUMNS = [f.TOOL_NAME, f.STATUS, f.DURATION_MS, *REFUSAL_COLUMNS]
EVENTS = [f.EV_TOOL_CALL, *REFUSAL_EVENTS]

_Partial = list[tuple[str | None, int, int, int, Any]]


def partial(rows: pl.DataFrame) -> _Partial:
    """(tool, calls, errors, refused, durations of the calls) per tool of some judged rows."""
    if not rows.height:
        return []
    call = pl.col("call").fill_null(False)
    grouped = summary_input(rows).group_by(f.TOOL_NAME).agg(
        call.sum().cast(pl.Int64).alias("calls"),
        (call & pl.col("failed")).sum().cast(pl.Int64).alias("errors"),
        pl.col("refused").fill_null(0).sum().cast(pl.Int64).alias("refused"),
        pl.col(f.DURATION_MS).filter(call).drop_nulls().cast(pl.Float64).alias("durations"),
    )
    return [
        (name, calls, errors, refused, np.asarray(durations, dtype="<f8"))
        for name, calls, errors, refused, durations in grouped.iter_rows()
    ]


class ToolPartials:
    """The sum of partials: counts per tool, and every call's duration."""

    def __init__(self) -> None:
        self._counts: dict[str | None, list[int]] = {}
        self._durations: dict[str | None, list[Any]] = {}

    def add(self, part: _Partial) -> None:
        for name, calls, errors, refused, durations in part:
            counts = self._counts.setdefault(name, [0, 0, 0])
            counts[0] += calls
            counts[1] += errors
            counts[2] += refused
            self._durations.setdefault(name, []).append(durations)

    def rows(self) -> list[dict[str, Any]]:
        """Rows of `tool_stats` (same columns, tools sorted, no tool last)."""
        rows = []
        for name in sorted(self._counts, key=lambda n: (n is None, n or "")):
            calls, errors, refused = self._counts[name]
            values = np.sort(np.concatenate(self._durations[name]))
            row: dict[str, Any] = {
                f.TOOL_NAME: name,
                "calls": calls,
                "errors": errors,
                "error_rate": errors / calls if calls else None,
                "refused": refused,
            }
            row.update({k: quantile(values, q) for k, q in QUANTILES.items()})
            rows.append(row)
        return rows


def streamed_tool_stats(
    paths: Paths = None,
    *,
    where: pl.Expr | None = None,
    progress: Progress | None = None,
    block_bytes: int = BLOCK_BYTES,
    workers: int | None = None,
) -> tuple[list[dict[str, Any]], LoadReport]:
    """`tool_stats(load(paths, where=where).frame)` rows from the JSON logs, summed block by block."""
    columns = [*COLUMNS, *(c for c in (where.meta.root_names() if where is not None else []) if c not in COLUMNS)]
    schema = read_schema(columns)
    wanted = pl.col(f.EVENT).is_in(EVENTS)
    keep = wanted if where is None else wanted & where

    def reduce(rows: pl.DataFrame) -> _Partial:
        return partial(rows.filter(keep) if rows.height else rows)

    sources = resolve_sources(paths)
    report = LoadReport(files=[s.name for s in sources])
    total = sum(s.path.stat().st_size for s in sources if s.path.exists())
    sums = ToolPartials()
    for source in sources:
        try:
            for part, size in judged_blocks(
                source, schema=schema, report=report, reduce=reduce, events=EVENTS,
                block_bytes=block_bytes, workers=workers,
            ):
                sums.add(part)
                report.bytes_read += size
                if progress is not None:
                    progress(report.bytes_read, total)
        except LogReadError as exc:
            report.unreadable.append(str(exc))
    return sums.rows(), report

