"""Calls, errors, error rates and latency percentiles, per tool, method, caller and service.

Percentiles use linear interpolation between closest ranks (see `mcptrace.logs._aggregates`).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from mcptrace import _fields as f
from mcptrace._fields import REPLICA
from mcptrace.analysis._chain import downstream_calls
from mcptrace.analysis._done import request_done
from mcptrace.analysis._replicas import EXAMPLE_REPLICA, has_replica
from mcptrace.logs._aggregates import counts, latency
from mcptrace.logs._refusals import is_refusal, refusal_reason, refusals

WINDOW = "window"


def _grouped(frame: pl.LazyFrame, by: Sequence[str], every: str | None, aggs: list[pl.Expr]) -> pl.LazyFrame:
    keys = list(by)
    if every is not None:
        frame = frame.with_columns(pl.col(f.TIMESTAMP).dt.truncate(every).alias(WINDOW))
        keys = [WINDOW, *keys]
    return frame.group_by(keys).agg(aggs).sort(keys, nulls_last=True)


def _calls_and_refusals(frame: pl.LazyFrame, call: pl.Expr, by: Sequence[str], every: str | None) -> pl.LazyFrame:
    failed = pl.col(f.STATUS) == f.FAILURE
    rows = frame.filter(call | is_refusal())
    return _grouped(rows, by, every, [*counts(failed, call=call, refused=refusals()), *latency(call=call)])


def tool_stats(
    frame: pl.LazyFrame, *, by: Sequence[str] = (f.TOOL_NAME,), every: str | None = None
) -> pl.LazyFrame:
    """Per tool (or `by`): calls, errors, error_rate, refused, p50_ms, p95_ms, p99_ms.

    Counts `tool_call` lines, one per tools/call; `refused` counts the requests
    refused before they ran (see `_refused`), which are not calls. With `every`
    ("1m", "5m", "1h") each row is one window, named by its start in a `window`
    column. Rows are sorted by the group keys, nulls last.
    """
    return _calls_and_refusals(frame, pl.col(f.EVENT) == f.EV_TOOL_CALL, by, every)


def method_stats(frame: pl.LazyFrame, *, every: str | None = None) -> pl.LazyFrame:
    """Per JSON-RPC method: the same columns as `tool_stats`, from each request's closing line."""
    return _calls_and_refusals(frame, request_done(), [f.METHOD], every)


def top_callers(frame: pl.LazyFrame, *, limit: int = 10) -> pl.LazyFrame:
    """The callers with the most tool calls: calls, errors, error_rate, refused, distinct tools.

    Sorted by calls (descending), then refused (descending), then caller id.
    """
    call = pl.col(f.EVENT) == f.EV_TOOL_CALL
    failed = pl.col(f.STATUS) == f.FAILURE
    return (
        frame.filter(call | is_refusal())
        .group_by(f.CALLER_ID)
        .agg(
            *counts(failed, call=call, refused=refusals()),
            pl.col(f.TOOL_NAME).filter(call).n_unique().cast(pl.Int64).alias("tools"),
        )
        .sort(["calls", "refused", f.CALLER_ID], descending=[True, True, False], nulls_last=True)
        .head(limit)
    )


def service_stats(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Per downstream service: calls, errors, error_rate and latency, from the tool calls' records."""
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    return downstream_calls(frame).group_by(f.SERVICE).agg(*counts(failed), *latency()).sort(f.SERVICE)


def error_sources(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Per tool: failed calls split into downstream errors (a dependency failed) and own errors; refused requests."""
    call = pl.col(f.EVENT) == f.EV_TOOL_CALL
    failed = (call & (pl.col(f.STATUS) == f.FAILURE)).fill_null(False)
    dep_failed = (
        pl.col(f.DOWNSTREAM_CALLS).list.eval(pl.element().struct.field(f.STATUS) == f.FAILURE).list.any()
    ).fill_null(False)
    return (
        frame.filter(call | is_refusal())
        .group_by(f.TOOL_NAME)
        .agg(
            call.sum().cast(pl.Int64).alias("calls"),
            failed.sum().cast(pl.Int64).alias("errors"),
            (failed & dep_failed).sum().cast(pl.Int64).alias("downstream_errors"),
            (failed & ~dep_failed).sum().cast(pl.Int64).alias("own_errors"),
            refusals().sum().cast(pl.Int64).alias("refused"),
        )
        .sort(f.TOOL_NAME, nulls_last=True)
    )


def error_messages(frame: pl.LazyFrame, *, limit: int = 20) -> pl.LazyFrame:
    """The most frequent errors: tool, error text, count, first and last time, one request id.

    Sorted by count, then last time (both descending), then tool and error
    text; the example is the latest failed call (the greatest request id
    among equal times), so the answer does not depend on the order of rows.
    """
    return (
        frame.filter((pl.col(f.EVENT) == f.EV_TOOL_CALL) & (pl.col(f.STATUS) == f.FAILURE))
        .group_by(f.TOOL_NAME, f.ERROR)
        .agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col(f.TIMESTAMP).min().alias("first"),
            pl.col(f.TIMESTAMP).max().alias("last"),
            pl.col(f.REQUEST_ID).sort_by(f.TIMESTAMP, f.REQUEST_ID).last().alias("example_request_id"),
            *(
                [pl.col(REPLICA).sort_by(f.TIMESTAMP, f.REQUEST_ID).last().alias(EXAMPLE_REPLICA)]
                if has_replica(frame)
                else []
            ),
        )
        .sort(
            ["count", "last", f.TOOL_NAME, f.ERROR], descending=[True, True, False, False], nulls_last=True
        )
        .head(limit)
    )


def refused_requests(frame: pl.LazyFrame, *, limit: int = 20) -> pl.LazyFrame:
    """Refused requests per tool and reason: count, first and last time, one request id, the callers.

    Sorted by count (descending), then tool and reason; the example is the
    latest refused request (the greatest request id among equal times).
    """
    count = refusals().sum().cast(pl.Int64)
    return (
        frame.filter(is_refusal())
        .with_columns(refusal_reason().alias(f.REFUSAL_REASON))
        .group_by(f.TOOL_NAME, f.REFUSAL_REASON)
        .agg(
            count.alias("count"),
            pl.col(f.TIMESTAMP).min().alias("first"),
            pl.col(f.TIMESTAMP).max().alias("last"),
            pl.col(f.REQUEST_ID).sort_by(f.TIMESTAMP, f.REQUEST_ID).last()
            .alias("example_request_id"),
            pl.col(f.CALLER_ID).drop_nulls().unique().sort().head(5).str.join(", ").alias("callers"),
        )
        .sort(["count", f.TOOL_NAME, f.REFUSAL_REASON], descending=[True, False, False], nulls_last=True)
        .head(limit)
    )
