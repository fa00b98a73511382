"""Agent runs, with or without sessions.

On the 2026-07-28 wire there is no session id, so a run is rebuilt from what
each call does carry, by the first rule that applies:

1. `session`: the session id, when there is one;
2. `baggage`: a run or conversation id the client put in W3C baggage;
3. `trace`: the trace id the client sent (only when the client sent one, which
   the log shows as a `parent_span_id`: the server's own per-request trace
   would split a run into single calls);
4. `gap`: caller + client name and version, cut where the caller was idle for
   longer than `gap`.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from mcptrace import _fields as f
from mcptrace._schema import BAGGAGE_KEYS
from mcptrace.analysis._order import in_order
from mcptrace.analysis._replicas import replica_columns, replicas_agg

RUN_ID = "run_id"
RULE = "rule"
RUN_COLUMNS = [
    RUN_ID,
    RULE,
    f.CALLER_ID,
    f.CLIENT_NAME,
    "start",
    "end",
    "calls",
    "errors",
    "tools",
    "request_ids",
]
_RUN_BAGGAGE = [k for k in BAGGAGE_KEYS if k != "session_id"]


def _baggage_run_id(schema: pl.Schema) -> pl.Expr:
    """The first run or conversation id in the line's baggage (a list of {key, value} entries)."""
    dtype = schema.get(f.BAGGAGE)
    if not isinstance(dtype, pl.List):
        return pl.lit(None, dtype=pl.String)
    value = None
    for key in reversed(_RUN_BAGGAGE):  # earlier keys in BAGGAGE_KEYS win
        found = (
            pl.col(f.BAGGAGE)
            .list.eval(pl.element().filter(pl.element().struct.field("key") == key).struct.field("value"))
            .list.first()
        )
        value = found if value is None else pl.coalesce(found, value)
    return value if value is not None else pl.lit(None, dtype=pl.String)


def _col(schema: pl.Schema, name: str) -> pl.Expr:
    return pl.col(name) if name in schema else pl.lit(None, dtype=pl.String)


def assign_runs(frame: pl.LazyFrame, *, gap: timedelta = timedelta(minutes=5)) -> pl.LazyFrame:
    """The tool calls of `frame`, in `_order`'s order, with two more columns: `run_id` and `rule` (which rule
    grouped it)."""
    schema = frame.collect_schema()
    calls = frame.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
    session = _col(schema, f.SESSION_ID)
    baggage = _baggage_run_id(schema)
    trace = pl.when(_col(schema, f.PARENT_SPAN_ID).is_not_null()).then(_col(schema, f.TRACE_ID))
    rule = (
        pl.when(session.is_not_null())
        .then(pl.lit("session"))
        .when(baggage.is_not_null())
        .then(pl.lit("baggage"))
        .when(trace.is_not_null())
        .then(pl.lit("trace"))
        .otherwise(pl.lit("gap"))
    )
    actor = pl.concat_str(
        [_col(schema, c).fill_null("-") for c in (f.CALLER_ID, f.CLIENT_NAME, f.CLIENT_VERSION)],
        separator="/",
    )
    # In time order once: a window over a caller's calls keeps that order, so the gaps are measured
    # between a caller's consecutive calls without sorting by caller first and back again.
    tagged = (
        calls.with_columns(
            rule.alias(RULE),
            actor.alias("_actor"),
            session.alias("_s"),
            baggage.alias("_b"),
            trace.alias("_t"),
        )
        .pipe(in_order)
    )
    # Gap runs: number the idle-separated stretches of each caller's gap-rule calls.
    is_gap = pl.col(RULE) == "gap"
    idle = pl.col(f.TIMESTAMP).diff().over("_actor", is_gap) > gap
    stretch = idle.fill_null(True).cast(pl.Int64).cum_sum().over("_actor", is_gap)
    run_id = (
        pl.when(pl.col(RULE) == "session")
        .then(pl.format("session:{}", pl.col("_s")))
        .when(pl.col(RULE) == "baggage")
        .then(pl.format("baggage:{}", pl.col("_b")))
        .when(pl.col(RULE) == "trace")
        .then(pl.format("trace:{}", pl.col("_t")))
        .otherwise(pl.format("gap:{}#{}", pl.col("_actor"), stretch))
    )
    return tagged.with_columns(run_id.alias(RUN_ID)).drop("_actor", "_s", "_b", "_t")


def runs(frame: pl.LazyFrame, *, gap: timedelta = timedelta(minutes=5)) -> pl.LazyFrame:
    """One row per run, with the columns of `RUN_COLUMNS` (`rule` says which rule grouped it), and the
    `replicas` that served it when the rows come from a fleet dataset."""
    schema = frame.collect_schema()
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    tagged = assign_runs(frame, gap=gap)
    if f.CLIENT_NAME not in schema:
        tagged = tagged.with_columns(pl.lit(None, dtype=pl.String).alias(f.CLIENT_NAME))
    return (
        tagged.group_by(RUN_ID)
        .agg(
            pl.col(RULE).first(),
            pl.col(f.CALLER_ID).drop_nulls().first(),
            pl.col(f.CLIENT_NAME).drop_nulls().first(),
            pl.col(f.TIMESTAMP).min().alias("start"),
            pl.col(f.TIMESTAMP).max().alias("end"),
            pl.len().cast(pl.Int64).alias("calls"),
            failed.sum().cast(pl.Int64).alias("errors"),
            pl.col(f.TOOL_NAME).drop_nulls().unique(maintain_order=True).alias("tools"),
            pl.col(f.REQUEST_ID).alias("request_ids"),
            *replicas_agg(tagged),
        )
        .select(replica_columns(tagged, RUN_COLUMNS))
        .sort("start", RUN_ID)
    )
