"""Sessions and the incident timeline: what happened to the service, minute by minute."""

from __future__ import annotations

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._done import request_done
from mcptrace.analysis._order import ORDER
from mcptrace.analysis._replicas import replica_columns, replicas_agg

SESSION_COLUMNS = [f.SESSION_ID, f.CALLER_ID, "start", "end", "requests", "calls", "errors", "tools"]
TIMELINE_COLUMNS = ["time", "kind", "count", "detail"]
#: The position of a row as read, the last tie-break of `_order`.
_WRITTEN = "_written"
_TIME_KEY = "_time_key"
_MIN_INT64 = -(2**63)


def sessions(frame: pl.LazyFrame) -> pl.LazyFrame:
    """One row per session id: caller, start, end, requests, tool calls, failed requests, tools used (and the
    `replicas` that served it, on a fleet dataset).

    The caller is the first one named (in `_order`'s order) and the tools are listed in the order of their
    first call. Only the rows that can decide those two are ordered: the lines at a session's earliest
    time that name a caller, and the tool calls' keys, never every line with all its columns.
    """
    done = request_done()
    tool = pl.col(f.EVENT) == f.EV_TOOL_CALL
    rows = frame.filter(pl.col(f.SESSION_ID).is_not_null()).with_row_index(_WRITTEN)
    totals = rows.group_by(f.SESSION_ID).agg(
        pl.col(f.TIMESTAMP).min().alias("start"),
        pl.col(f.TIMESTAMP).max().alias("end"),
        pl.col(f.REQUEST_ID).filter(done).n_unique().cast(pl.Int64).alias("requests"),
        tool.sum().cast(pl.Int64).alias("calls"),
        (done & (pl.col(f.STATUS) == f.FAILURE)).fill_null(False).sum().cast(pl.Int64).alias("errors"),
        *replicas_agg(frame),
    )
    named = rows.filter(pl.col(f.CALLER_ID).is_not_null()).select(
        f.SESSION_ID, f.CALLER_ID, *ORDER, _WRITTEN, _time_key().alias(_TIME_KEY))
    earliest = named.group_by(f.SESSION_ID).agg(pl.col(_TIME_KEY).min())
    callers = (
        named.join(earliest, on=[f.SESSION_ID, _TIME_KEY])
        .sort([f.SESSION_ID, *ORDER, _WRITTEN], nulls_last=False)
        .group_by(f.SESSION_ID, maintain_order=True)
        .agg(pl.col(f.CALLER_ID).first())
    )
    tools = (
        rows.filter(tool & pl.col(f.TOOL_NAME).is_not_null())
        .select(f.SESSION_ID, f.TOOL_NAME, *ORDER, _WRITTEN)
        .sort([f.SESSION_ID, *ORDER, _WRITTEN], nulls_last=False)
        .group_by(f.SESSION_ID, maintain_order=True)
        .agg(pl.col(f.TOOL_NAME).unique(maintain_order=True).alias("tools"))
    )
    empty = pl.lit([], dtype=pl.List(pl.String))
    return (
        totals.join(callers, on=f.SESSION_ID, how="left")
        .join(tools, on=f.SESSION_ID, how="left")
        .with_columns(pl.col("tools").fill_null(empty))
        .select(replica_columns(frame, SESSION_COLUMNS))
        .sort("start", f.SESSION_ID)
    )


def _time_key() -> pl.Expr:
    """The timestamp as a number, a missing one first (as `_order` puts it)."""
    return pl.col(f.TIMESTAMP).cast(pl.Int64).fill_null(_MIN_INT64)


def active_sessions(frame: pl.LazyFrame, *, every: str = "1m") -> pl.LazyFrame:
    """Per window: sessions with at least one line in it (`active`), and the change from the window before."""
    return (
        frame.filter(pl.col(f.SESSION_ID).is_not_null())
        .with_columns(pl.col(f.TIMESTAMP).dt.truncate(every).alias("window"))
        .group_by("window")
        .agg(pl.col(f.SESSION_ID).n_unique().cast(pl.Int64).alias("active"))
        .sort("window")
        .with_columns((pl.col("active") - pl.col("active").shift(1)).alias("change"))
    )


def timeline(
    frame: pl.LazyFrame,
    *,
    every: str = "1m",
    error_burst: int = 5,
    error_rate: float = 0.2,
    storm: int = 10,
    session_drop: float = 0.5,
) -> pl.LazyFrame:
    """Incidents in time order: time, kind, count, detail.

    Kinds: `start` and `stop` (the server started or stopped), `error_burst` (a window with at
    least `error_burst` failed tool calls and an error rate of `error_rate`),
    `breaker` (a circuit breaker changed state), `rate_limit_storm` and
    `auth_failures` (at least `storm` such lines in a window), and
    `session_drop` (active sessions fell by `session_drop` or more: often a restart).
    Counted kinds are bucketed by `every` but stamped with the time of their window's
    first such line, so the timeline reads in the order things happened.
    """
    win = pl.col(f.TIMESTAMP).dt.truncate(every).alias("time")
    columns = [
        pl.col("time"),
        pl.col("kind"),
        pl.col("count").cast(pl.Int64),
        pl.col("detail").cast(pl.String),
    ]

    restarts = frame.filter(pl.col(f.EVENT).is_in([f.EV_SERVER_STARTED, f.EV_SERVER_STOPPED])).select(
        pl.col(f.TIMESTAMP).alias("time"),
        pl.when(pl.col(f.EVENT) == f.EV_SERVER_STOPPED).then(pl.lit("stop")).otherwise(pl.lit("start"))
        .alias("kind"),
        pl.lit(1).alias("count"),
        pl.concat_str([pl.col(f.EVENT), pl.col(f.MESSAGE).fill_null("")], separator=" ")
        .str.strip_chars()
        .alias("detail"),
    )
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    bursts = (
        frame.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
        .group_by(win)
        .agg(
            pl.col(f.TIMESTAMP).filter(failed).min().alias("_first"),
            failed.sum().alias("count"),
            failed.mean().alias("_rate"),
            pl.col(f.TOOL_NAME).filter(failed).drop_nulls().unique().sort().str.join(", ").alias("detail"),
        )
        .filter((pl.col("count") >= error_burst) & (pl.col("_rate") >= error_rate))
        .with_columns(
            pl.col("_first").alias("time"),
            pl.lit("error_burst").alias("kind"),
            pl.format(
                "{}% of tool calls failed: {}", (pl.col("_rate") * 100).round(0), pl.col("detail")
            ).alias("detail"),
        )
    )
    breakers = frame.filter(pl.col(f.EVENT) == f.EV_BREAKER_STATE).select(
        pl.col(f.TIMESTAMP).alias("time"),
        pl.lit("breaker").alias("kind"),
        pl.lit(1).alias("count"),
        pl.concat_str(
            [
                pl.col(f.SERVICE).fill_null("?"),
                pl.col(f.STATUS).fill_null(""),
                pl.col(f.MESSAGE).fill_null(""),
            ],
            separator=" ",
        )
        .str.strip_chars()
        .alias("detail"),
    )

    def storms(event: str, reasons: list[str], kind: str) -> pl.LazyFrame:
        # Version 3 writes refusals as `request_refused` lines that may stand for `count` requests each.
        refused = (pl.col(f.EVENT) == f.EV_REQUEST_REFUSED) & pl.col(f.REFUSAL_REASON).is_in(reasons)
        return (
            frame.filter((pl.col(f.EVENT) == event) | refused.fill_null(False))
            .group_by(win)
            .agg(
                pl.col(f.TIMESTAMP).min().alias("_first"),
                pl.col(f.COUNT).fill_null(1).sum().cast(pl.UInt32).alias("count"),
                pl.col(f.CALLER_ID).drop_nulls().unique().sort().head(5).str.join(", ").alias("detail"),
            )
            .filter(pl.col("count") >= storm)
            .with_columns(pl.col("_first").alias("time"), pl.lit(kind).alias("kind"))
        )

    drops = (
        active_sessions(frame, every=every)
        .filter(pl.col("change") <= -(pl.col("active") - pl.col("change")) * session_drop)
        .filter(pl.col("change") < -1)
        .select(
            pl.col("window").alias("time"),
            pl.lit("session_drop").alias("kind"),
            (-pl.col("change")).alias("count"),
            pl.format("active sessions fell to {}", pl.col("active")).alias("detail"),
        )
    )
    parts = [
        restarts,
        bursts,
        breakers,
        storms(f.EV_RATE_LIMITED, [f.R_RATE_LIMITED, f.R_SUSPENDED], "rate_limit_storm"),
        storms(f.EV_AUTH_FAILED, [f.R_UNAUTHENTICATED], "auth_failures"),
        drops,
    ]
    # At equal times the order of `parts` holds: a start or stop before what it explains.
    return pl.concat([p.select(columns) for p in parts], how="vertical").sort("time", maintain_order=True)
