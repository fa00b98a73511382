"""The tables the views draw: `mcptrace.analysis` results, shaped for plotting.

The analyses themselves (loading, chains, percentiles, loops, runs, sessions)
are the forensics layer's; this module only loads eagerly, picks columns,
names time buckets `bucket` and adds what a picture needs (a call's start time
next to its end). Nothing here imports plotly, so it is cheap to test.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta

import polars as pl

from mcptrace import _fields as f
from mcptrace import analysis
from mcptrace._errors import LogReadError
from mcptrace.analysis._done import request_done

Frame = pl.DataFrame | pl.LazyFrame

#: Percentiles drawn by the latency views, as (label, column of `analysis.tool_stats`).
PERCENTILES: tuple[tuple[str, str], ...] = (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))
_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _eager(frame: Frame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def load_logs(*paths: str | os.PathLike[str], replicas: Sequence[str] | None = None) -> pl.DataFrame:
    """Every record of the given log files or directories (rotated and compressed sets too), in time order.

    Lines that cannot be read (a torn last line, a stray print) are skipped with a
    warning naming the file and line; the good lines are all kept. A fleet dataset
    (an `s3://` URL or a folder written by `mcptrace index --dest`) is read too;
    `replicas` keeps only those replicas of it.
    """
    if not paths:
        raise LogReadError("no log paths given")
    loaded = analysis.load(list(paths), replicas=replicas)
    frame = loaded.frame.collect()
    if loaded.report.corrupt_count:
        warnings.warn(loaded.report.summary(), stacklevel=2)
    if frame.get_column(f.TIMESTAMP).is_sorted():  # one file read in line order mostly is: no copy then
        return frame
    return frame.sort(f.TIMESTAMP, maintain_order=True)


def tool_calls(logs: Frame) -> pl.DataFrame:
    """One row per `tool_call` line, with the call's start time (`started`) next to its end (`timestamp`)."""
    duration = pl.duration(microseconds=(pl.col(f.DURATION_MS).fill_null(0) * 1000).cast(pl.Int64))
    return (
        _lazy(logs)
        .filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
        .with_columns(
            (pl.col(f.TIMESTAMP) - duration).alias("started"),
            (pl.col(f.STATUS) == f.FAILURE).fill_null(False).alias("failed"),
        )
        .sort(f.TIMESTAMP)
        .collect()
    )


def request_records(logs: Frame, request_id: str) -> pl.DataFrame:
    """Every line of one request, in order (`analysis.chain`): the raw material of its waterfall."""
    return analysis.chain(_lazy(logs), request_id).collect()


def time_range(logs: Frame) -> tuple[datetime, datetime]:
    stamps = _eager(logs)[f.TIMESTAMP]
    return stamps.min(), stamps.max()  # type: ignore[return-value]


def bucket_seconds(every: str) -> float:
    """The length of a bucket such as '5s' or '1m' in seconds; ValueError for anything else."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for suffix in ("ms", "s", "m", "h", "d"):
        number = every[: -len(suffix)]
        if every.endswith(suffix) and number.isdigit() and int(number) > 0:
            return int(number) * units[suffix]
    raise ValueError(f"bucket size {every!r}: use a whole number of ms, s, m, h or d (e.g. '5s')")


def _window(frame: pl.LazyFrame, start: datetime | None, end: datetime | None) -> pl.LazyFrame:
    if start is not None:
        frame = frame.filter(pl.col(f.TIMESTAMP) >= start)
    if end is not None:
        frame = frame.filter(pl.col(f.TIMESTAMP) <= end)
    return frame


def _stats(logs: Frame, every: str, by: str, start: datetime | None, end: datetime | None) -> pl.DataFrame:
    bucket_seconds(every)
    stats = analysis.tool_stats(_window(_lazy(logs), start, end), by=[by], every=every).collect()
    return stats.rename({"window": "bucket"}).sort(by, "bucket")


def latency_table(
    logs: Frame,
    *,
    every: str = "5s",
    tools: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """p50/p95/p99 of tool-call duration per tool and bucket: `tool_name, bucket, calls, p50, p95, p99`."""
    stats = _stats(logs, every, f.TOOL_NAME, start, end)
    if tools is not None:
        stats = stats.filter(pl.col(f.TOOL_NAME).is_in(list(tools)))
    return stats.select(
        f.TOOL_NAME, "bucket", "calls", *(pl.col(column).alias(name) for name, column in PERCENTILES)
    )


def error_rates(logs: Frame, *, every: str = "5s") -> pl.DataFrame:
    """Failed tool calls per tool and bucket, and the requests refused before they ran:
    `tool_name, bucket, calls, errors, error_rate, refused`."""
    return _stats(logs, every, f.TOOL_NAME, None, None).select(
        f.TOOL_NAME, "bucket", "calls", "errors", "error_rate", "refused"
    )


def caller_rates(logs: Frame, *, every: str = "5s") -> pl.DataFrame:
    """Tool calls per second for each caller and bucket: `caller_id, bucket, calls, per_second`."""
    seconds = bucket_seconds(every)
    return (
        _stats(logs, every, f.CALLER_ID, None, None)
        .with_columns(
            pl.col(f.CALLER_ID).fill_null("(unknown)"), (pl.col("calls") / seconds).alias("per_second")
        )
        .select(f.CALLER_ID, "bucket", "calls", "per_second")
    )


def sessions_over_time(logs: Frame, *, every: str = "5s") -> pl.DataFrame:
    """Per bucket: active sessions, sessions that started, and requests that carried no session at all."""
    bucket_seconds(every)
    frame = _lazy(logs)
    active = analysis.active_sessions(frame, every=every).select(
        pl.col("window").alias("bucket"), pl.col("active").alias("active_sessions")
    )
    started = (
        analysis.sessions(frame)
        .group_by(pl.col("start").dt.truncate(every).alias("bucket"))
        .agg(pl.len().cast(pl.Int64).alias("new_sessions"))
    )
    sessionless = (
        frame.filter(request_done() & pl.col(f.SESSION_ID).is_null())
        .group_by(pl.col(f.TIMESTAMP).dt.truncate(every).alias("bucket"))
        .agg(pl.len().cast(pl.Int64).alias("sessionless_requests"))
    )
    buckets = pl.concat([active.select("bucket"), started.select("bucket"), sessionless.select("bucket")])
    return (
        buckets.unique()
        .join(active, on="bucket", how="left")
        .join(started, on="bucket", how="left")
        .join(sessionless, on="bucket", how="left")
        .fill_null(0)
        .sort("bucket")
        .collect()
    )


def loop_episodes(logs: Frame, **options: object) -> pl.DataFrame:
    """`analysis.loops` episodes, most severe first, numbered (`episode`) so a view can open one by number.

    Columns: `episode, kind, caller_id, session_id, tool_name, tools, start, end,
    count, rate (calls per minute), severity, request_ids`. `options` go to
    `mcptrace.analysis.loops` (threshold, window, ...).
    """
    episodes = analysis.loops(_lazy(logs), **options).collect()  # type: ignore[arg-type]
    return (
        episodes.with_columns(
            pl.col("severity").replace_strict(_SEVERITY_ORDER, default=3, return_dtype=pl.Int8).alias("_rank")
        )
        .sort("_rank", "count", "start", descending=[False, True, False])
        .drop("_rank")
        .with_row_index("episode", offset=1)
    )


def run_calls(logs: Frame, *, gap: timedelta = timedelta(minutes=5)) -> pl.DataFrame:
    """Every tool call with its `run_id` and the `rule` that grouped it (`analysis.assign_runs`), plus
    the `started` and `failed` columns of `tool_calls`."""
    tagged = analysis.assign_runs(_lazy(logs), gap=gap).select(f.REQUEST_ID, "run_id", "rule").collect()
    return tool_calls(logs).join(tagged, on=f.REQUEST_ID, how="left")


def run_summary(logs: Frame, *, gap: timedelta = timedelta(minutes=5)) -> pl.DataFrame:
    """One row per run (`analysis.runs`): `run_id, rule, caller_id, client_name, start, end, calls, ...`."""
    return analysis.runs(_lazy(logs), gap=gap).collect().sort("start")


#: Refusal events of log versions 1 and 2, and the version-3 reason each one is.
_OLD_REFUSALS = {f.EV_AUTH_FAILED: f.R_UNAUTHENTICATED, f.EV_RATE_LIMITED: f.R_RATE_LIMITED}


def refusals(logs: Frame, *, every: str = "5s") -> pl.DataFrame:
    """Requests a guard refused, per bucket, reason and who was refused (the caller, else the
    credential's principal, else the client address): `bucket, refusal_reason, subject, refused`.

    An aggregated `request_refused` line counts as its `count` requests; older logs'
    `auth_failed` and `rate_limited` lines count one each.
    """
    bucket_seconds(every)
    frame = _lazy(logs)
    schema = frame.collect_schema()

    def col(name: str) -> pl.Expr:
        return pl.col(name) if name in schema else pl.lit(None, dtype=pl.String)

    reason = col(f.REFUSAL_REASON)
    for event, name in _OLD_REFUSALS.items():
        reason = pl.when(pl.col(f.EVENT) == event).then(pl.lit(name)).otherwise(reason)
    count = pl.col(f.COUNT).fill_null(1) if f.COUNT in schema else pl.lit(1)
    return (
        frame.filter(pl.col(f.EVENT).is_in([f.EV_REQUEST_REFUSED, *_OLD_REFUSALS]))
        .group_by(
            pl.col(f.TIMESTAMP).dt.truncate(every).alias("bucket"),
            reason.fill_null("refused").alias(f.REFUSAL_REASON),
            pl.coalesce(col(f.CALLER_ID), col(f.PRINCIPAL), col(f.CLIENT_ADDRESS), pl.lit("(unknown)")).alias(
                "subject"
            ),
        )
        .agg(count.sum().cast(pl.Int64).alias("refused"))
        .sort("bucket", f.REFUSAL_REASON, "subject")
        .collect()
    )


def incident_table(logs: Frame, **thresholds: object) -> pl.DataFrame:
    """`analysis.incidents` of the logs, most severe first (the report's and the notebooks' findings)."""
    return analysis.incidents(_lazy(logs), **thresholds).collect()
