"""The demo's closing summary, computed with polars from the log the server wrote."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mcptrace import _fields as f
from mcptrace.logs import load


def tool_calls(log_file: Path) -> pl.DataFrame:
    """The `tool_call` lines of a log file, typed by the log contract and judged as every command judges them."""
    return load([log_file], events=[f.EV_TOOL_CALL], use_index=False).frame.collect()


def per_tool(calls: pl.DataFrame) -> pl.DataFrame:
    """Calls, errors and median duration per tool, busiest first."""
    return (
        calls.group_by(f.TOOL_NAME)
        .agg(
            pl.len().alias("calls"),
            (pl.col(f.STATUS) == f.FAILURE).sum().alias("errors"),
            pl.col(f.DURATION_MS).median().round(1).alias("p50_ms"),
        )
        .sort(["calls", f.TOOL_NAME], descending=[True, False])
    )


def per_client(calls: pl.DataFrame) -> pl.DataFrame:
    """Calls, errors, protocol era and sessions seen per client."""
    return (
        calls.group_by(f.CLIENT_NAME)
        .agg(
            pl.len().alias("calls"),
            (pl.col(f.STATUS) == f.FAILURE).sum().alias("errors"),
            pl.col(f.PROTOCOL_VERSION).drop_nulls().unique().sort().str.join(",").alias("protocol"),
            pl.col(f.SESSION_ID).drop_nulls().n_unique().alias("sessions"),
        )
        .sort(["calls", f.CLIENT_NAME], descending=[True, False])
    )


def render(frame: pl.DataFrame) -> str:
    """A plain-text table without polars' box drawing, for terminals and CI logs alike."""
    columns = frame.columns
    rows = [[("" if v is None else str(v)) for v in row] for row in frame.iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
