"""Calls, errors, error rates and latency percentiles, per tool, method, caller and service.

Percentiles use linear interpolation between closest ranks (see `mcptrace.logs._aggregates`).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._chain import downstream_calls
from mcptrace.analysis._done import request_done
from mcptrace.logs._aggregates import counts, latency

WINDOW = "window"


def _grouped(frame: pl.LazyFrame, by: Sequence[str], every: str | None, aggs: list[pl.Expr]) -> pl.LazyFrame:
    keys = list(by)
    if every is not None:
        frame = frame.with_columns(pl.col(f.TIMESTAMP).dt.truncate(every).alias(WINDOW))
        keys = [WINDOW, *keys]
    return frame.group_by(keys).agg(aggs).sort(keys, nulls_last=True)


def tool_stats(
    frame: pl.LazyFrame, *, by: Sequence[str] = (f.TOOL_NAME,), every: str | None = None
) -> pl.LazyFrame:
    """Per tool (or `by`): calls, errors, error_rate, p50_ms, p95_ms, p99_ms.

    Counts `tool_call` lines, one per tools/call. With `every` ("1m", "5m", "1h")
    each row is one window, named by its start in a `window` column.
    """
    calls = frame.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    return _grouped(calls, by, every, [*counts(failed), *latency()])


def method_stats(frame: pl.LazyFrame, *, every: str | None = None) -> pl.LazyFrame:
    """Per JSON-RPC method: the same columns as `tool_stats`, from each request's closing line."""
    done = frame.filter(request_done())
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    return _grouped(done, [f.METHOD], every, [*counts(failed), *latency()])


def top_callers(frame: pl.LazyFrame, *, limit: int = 10) -> pl.LazyFrame:
    """The callers with the most tool calls: calls, errors, error_rate, distinct tools."""
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    return (
        frame.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
        .group_by(f.CALLER_ID)
        .agg(*counts(failed), pl.col(f.TOOL_NAME).n_unique().alias("tools"))
        .sort(["calls", f.CALLER_ID], descending=[True, False], nulls_last=True)
        .head(limit)
    )


def service_stats(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Per downstream service: calls, errors, error_rate and latency, from the tool calls' records."""
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    return downstream_calls(frame).group_by(f.SERVICE).agg(*counts(failed), *latency()).sort(f.SERVICE)


def error_sources(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Per tool: failed calls split into downstream errors (a dependency failed) and own errors."""
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    dep_failed = (
        pl.col(f.DOWNSTREAM_CALLS).list.eval(pl.element().struct.field(f.STATUS) == f.FAILURE).list.any()
    ).fill_null(False)
    return (
        frame.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
        .group_by(f.TOOL_NAME)
        .agg(
            pl.len().cast(pl.Int64).alias("calls"),
            failed.sum().cast(pl.Int64).alias("errors"),
            (failed & dep_failed).sum().cast(pl.Int64).alias("downstream_errors"),
            (failed & ~dep_failed).sum().cast(pl.Int64).alias("own_errors"),
        )
        .sort(f.TOOL_NAME, nulls_last=True)
    )


def error_messages(frame: pl.LazyFrame, *, limit: int = 20) -> pl.LazyFrame:
    """The most frequent errors: tool, error text, count, first and last time, one request id."""
    return (
        frame.filter((pl.col(f.EVENT) == f.EV_TOOL_CALL) & (pl.col(f.STATUS) == f.FAILURE))
        .group_by(f.TOOL_NAME, f.ERROR)
        .agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col(f.TIMESTAMP).min().alias("first"),
            pl.col(f.TIMESTAMP).max().alias("last"),
            pl.col(f.REQUEST_ID).last().alias("example_request_id"),
        )
        .sort(["count", "last"], descending=[True, True])
        .head(limit)
    )
