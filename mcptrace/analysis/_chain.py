"""The call chain of one request: its lines in time order, with the downstream calls it made."""

from __future__ import annotations

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._order import in_order

#: Added columns: milliseconds since the previous line and since the request's first line.
STEP_MS = "step_ms"
ELAPSED_MS = "elapsed_ms"


def _ms(delta: pl.Expr) -> pl.Expr:
    return delta.dt.total_microseconds().cast(pl.Float64) / 1000.0


def chain(
    frame: pl.LazyFrame,
    request_id: str | None = None,
    *,
    trace_id: str | None = None,
    session_id: str | None = None,
    jsonrpc_id: str | None = None,
) -> pl.LazyFrame:
    """Every line of one request in time order, with `step_ms` and `elapsed_ms`.

    Select the request by `mcp_request_id`, by `trace_id`, or by `session_id`
    plus `jsonrpc_id` (JSON-RPC ids restart in every session, so the pair is
    needed). Lines with equal timestamps keep the order they were written in.
    """
    if request_id is not None:
        cond = pl.col(f.REQUEST_ID) == request_id
    elif trace_id is not None:
        cond = pl.col(f.TRACE_ID) == trace_id
    elif session_id is not None and jsonrpc_id is not None:
        cond = (pl.col(f.SESSION_ID) == session_id) & (pl.col(f.JSONRPC_ID) == str(jsonrpc_id))
    else:
        raise ValueError("give a request id, a trace id, or a session id with a JSON-RPC id")
    first = pl.col(f.TIMESTAMP).min()
    return (
        frame.filter(cond)
        .with_row_index("_order")
        .sort(f.TIMESTAMP, "_order")
        .drop("_order")
        .with_columns(
            _ms(pl.col(f.TIMESTAMP).diff()).fill_null(0.0).alias(STEP_MS),
            _ms(pl.col(f.TIMESTAMP) - first).alias(ELAPSED_MS),
        )
    )


def downstream_calls(frame: pl.LazyFrame) -> pl.LazyFrame:
    """One row per downstream call, nested under the tool call that made it.

    Columns: request id, tool, caller, session, the tool call's timestamp and
    `step` (the call's position within its tool call), then the downstream
    call's service, query_hash, duration_ms, status and error.
    """
    keep = [f.TIMESTAMP, f.REQUEST_ID, f.TOOL_NAME, f.CALLER_ID, f.SESSION_ID]
    item = pl.col(f.DOWNSTREAM_CALLS)
    return (
        frame.filter((pl.col(f.EVENT) == f.EV_TOOL_CALL) & (item.list.len() > 0))
        .select(*keep, item)
        .with_columns(pl.int_ranges(0, item.list.len()).alias("step"))
        .explode(f.DOWNSTREAM_CALLS, "step")
        .select(
            *keep,
            "step",
            item.struct.field(f.SERVICE),
            item.struct.field(f.QUERY_HASH),
            item.struct.field(f.DURATION_MS),
            item.struct.field(f.STATUS),
            item.struct.field(f.ERROR),
        )
    )


def outcomes(frame: pl.LazyFrame) -> pl.LazyFrame:
    """One row per request: start, end, total duration, method, tool, caller and final status."""
    done = pl.col(f.EVENT).is_in([f.EV_RESPONSE_SENT, f.EV_TOOL_CALL])
    return (
        frame.filter(pl.col(f.REQUEST_ID).is_not_null())
        .pipe(in_order)
        .group_by(f.REQUEST_ID)
        .agg(
            pl.col(f.TIMESTAMP).min().alias("start"),
            pl.col(f.TIMESTAMP).max().alias("end"),
            pl.col(f.DURATION_MS).filter(done).max().alias("total_ms"),
            pl.col(f.METHOD).drop_nulls().first(),
            pl.col(f.TOOL_NAME).drop_nulls().first(),
            pl.col(f.CALLER_ID).drop_nulls().first(),
            pl.col(f.SESSION_ID).drop_nulls().first(),
            pl.col(f.STATUS).filter(done).drop_nulls().last(),
            pl.col(f.ERROR).drop_nulls().last(),
        )
        .sort("start", f.REQUEST_ID)
    )
