"""The tables the views draw, shaped from log records (polars in, polars out).

Each function takes the loaded log records (a `DataFrame` or `LazyFrame` with
the contract's columns) and returns a small eager frame ready to plot. Nothing
here imports plotly, so these are cheap to test and to reuse in reports.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace._schema import polars_schema

Frame = pl.DataFrame | pl.LazyFrame

#: Percentiles drawn by the latency views, as (label, quantile).
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def _eager(frame: Frame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def _log_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and (".log" in p.name or ".jsonl" in p.name))
        if not found:
            raise LogReadError(f"{path}: no log files (*.log, *.jsonl) in this directory")
        return found
    if not path.exists():
        raise LogReadError(f"{path}: no such file or directory")
    return [path]


def load_logs(*paths: str | os.PathLike[str]) -> pl.DataFrame:
    """Every record of the given log files or directories, typed by the contract and sorted by time.

    Lines that are not JSON objects (a torn last line, a stray print) are skipped
    with a warning that says how many and where; the good lines are all kept.
    """
    if not paths:
        raise LogReadError("no log paths given")
    files = [file for p in paths for file in _log_files(Path(p))]
    frames = [_read_file(file) for file in files]
    return pl.concat(frames).filter(pl.col(f.TIMESTAMP).is_not_null()).sort(f.TIMESTAMP)


def _read_file(path: Path) -> pl.DataFrame:
    schema = polars_schema()
    try:
        return pl.read_ndjson(path, schema=schema, ignore_errors=True)
    except OSError as exc:
        raise LogReadError(f"{path}: {exc.strerror or exc}") from None
    except pl.exceptions.PolarsError:
        pass
    import orjson

    good: list[bytes] = []
    bad: list[int] = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                ok = isinstance(orjson.loads(line), dict)
            except orjson.JSONDecodeError:
                ok = not line.strip()
            if ok:
                good.append(line)
            else:
                bad.append(number)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (" ..." if len(bad) > 5 else "")
        message = f"{path}: skipped {len(bad)} line(s) that are not JSON objects (line {shown})"
        warnings.warn(message, stacklevel=3)
    data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in good if line.strip())
    if not data:
        return pl.DataFrame(schema=schema)
    return pl.read_ndjson(io.BytesIO(data), schema=schema, ignore_errors=True)


def tool_calls(logs: Frame) -> pl.DataFrame:
    """One row per `tool_call` line, with the call's start time (`started`) next to its end (`timestamp`)."""
    return (
        _eager(logs)
        .lazy()
        .filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
        .with_columns(
            (
                pl.col(f.TIMESTAMP) - pl.duration(microseconds=(pl.col(f.DURATION_MS).fill_null(0) * 1000))
            ).alias("started"),
            (pl.col(f.STATUS) == f.FAILURE).alias("failed"),
        )
        .sort(f.TIMESTAMP)
        .collect()
    )


def request_records(logs: Frame, request_id: str) -> pl.DataFrame:
    """Every line of one request, in order: the raw material of its waterfall."""
    return _eager(logs).filter(pl.col(f.REQUEST_ID) == request_id).sort(f.TIMESTAMP)


def time_range(logs: Frame) -> tuple[datetime, datetime]:
    stamps = _eager(logs)[f.TIMESTAMP]
    return stamps.min(), stamps.max()  # type: ignore[return-value]


def _window(calls: pl.DataFrame, start: datetime | None, end: datetime | None) -> pl.DataFrame:
    if start is not None:
        calls = calls.filter(pl.col(f.TIMESTAMP) >= start)
    if end is not None:
        calls = calls.filter(pl.col(f.TIMESTAMP) <= end)
    return calls


def latency_percentiles(
    logs: Frame,
    *,
    every: str = "5s",
    tools: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """p50/p95/p99 of tool-call duration per tool and bucket: `tool_name, bucket, calls, p50, p95, p99`."""
    calls = _window(tool_calls(logs), start, end)
    if tools is not None:
        calls = calls.filter(pl.col(f.TOOL_NAME).is_in(list(tools)))
    return (
        calls.sort(f.TIMESTAMP)
        .group_by_dynamic(f.TIMESTAMP, every=every, group_by=f.TOOL_NAME)
        .agg(
            pl.len().alias("calls"),
            *(
                pl.col(f.DURATION_MS).quantile(q, interpolation="linear").alias(name)
                for name, q in PERCENTILES
            ),
        )
        .rename({f.TIMESTAMP: "bucket"})
        .sort(f.TOOL_NAME, "bucket")
    )


def error_rates(logs: Frame, *, every: str = "5s") -> pl.DataFrame:
    """Share of failed tool calls per tool and time bucket: `tool_name, bucket, calls, errors, error_rate`."""
    return (
        tool_calls(logs)
        .group_by_dynamic(f.TIMESTAMP, every=every, group_by=f.TOOL_NAME)
        .agg(pl.len().alias("calls"), pl.col("failed").sum().alias("errors"))
        .with_columns((pl.col("errors") / pl.col("calls")).alias("error_rate"))
        .rename({f.TIMESTAMP: "bucket"})
        .sort(f.TOOL_NAME, "bucket")
    )


def caller_rates(logs: Frame, *, every: str = "5s") -> pl.DataFrame:
    """Tool calls per second for each caller and time bucket: `caller_id, bucket, calls, per_second`."""
    seconds = pl.duration(**_duration_kwargs(every)).dt.total_milliseconds() / 1000
    return (
        tool_calls(logs)
        .with_columns(pl.col(f.CALLER_ID).fill_null("(unknown)"))
        .group_by_dynamic(f.TIMESTAMP, every=every, group_by=f.CALLER_ID)
        .agg(pl.len().alias("calls"))
        .with_columns((pl.col("calls") / seconds).alias("per_second"))
        .rename({f.TIMESTAMP: "bucket"})
        .sort(f.CALLER_ID, "bucket")
    )


def _duration_kwargs(every: str) -> dict[str, int]:
    units = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    for suffix in ("ms", "s", "m", "h", "d"):
        if every.endswith(suffix) and every[: -len(suffix)].isdigit():
            return {units[suffix]: int(every[: -len(suffix)])}
    raise ValueError(f"bucket size {every!r}: use a whole number of ms, s, m, h or d (e.g. '5s')")


def bucket_seconds(every: str) -> float:
    """The length of a bucket such as '5s' or '1m' in seconds; ValueError for anything else."""
    return timedelta(**{k: float(v) for k, v in _duration_kwargs(every).items()}).total_seconds()


def sessions_over_time(logs: Frame, *, every: str = "5s") -> pl.DataFrame:
    """Per bucket: sessions seen, sessions first seen, and requests that carried no session at all."""
    requests = _eager(logs).filter(pl.col(f.EVENT) == f.EV_REQUEST_RECEIVED).sort(f.TIMESTAMP)
    first_seen = (
        requests.filter(pl.col(f.SESSION_ID).is_not_null())
        .group_by(f.SESSION_ID)
        .agg(pl.col(f.TIMESTAMP).min().alias("first_seen"))
    )
    return (
        requests.join(first_seen, on=f.SESSION_ID, how="left")
        .group_by_dynamic(f.TIMESTAMP, every=every)
        .agg(
            pl.col(f.SESSION_ID).drop_nulls().n_unique().alias("active_sessions"),
            pl.col(f.SESSION_ID)
            .filter(pl.col(f.TIMESTAMP) == pl.col("first_seen"))
            .n_unique()
            .alias("new_sessions"),
            pl.col(f.SESSION_ID).is_null().sum().alias("sessionless_requests"),
        )
        .rename({f.TIMESTAMP: "bucket"})
    )


def loop_episodes(logs: Frame, *, max_gap: str = "1s", min_calls: int = 10) -> pl.DataFrame:
    """Bursts of identical calls: the same caller, tool and arguments, each within `max_gap` of the last.

    One row per episode: `episode, caller_id, tool_name, arguments_hash, start, end, calls, errors,
    distinct_results, request_ids`, most calls first.
    """
    gap = timedelta(**{k: float(v) for k, v in _duration_kwargs(max_gap).items()})
    key = [f.CALLER_ID, f.TOOL_NAME, f.ARGUMENTS_HASH]
    episodes = (
        tool_calls(logs)
        .sort(*key, f.TIMESTAMP)
        .with_columns(
            (pl.col(f.TIMESTAMP).diff().over(key).fill_null(gap * 2) > gap).cum_sum().alias("_burst")
        )
        .group_by(*key, "_burst")
        .agg(
            pl.col("started").min().alias("start"),
            pl.col(f.TIMESTAMP).max().alias("end"),
            pl.len().alias("calls"),
            pl.col("failed").sum().alias("errors"),
            pl.col(f.RESULT_HASH).n_unique().alias("distinct_results"),
            pl.col(f.REQUEST_ID).alias("request_ids"),
        )
        .filter(pl.col("calls") >= min_calls)
        .sort("calls", "start", descending=[True, False])
        .drop("_burst")
    )
    return episodes.with_row_index("episode", offset=1)


def runs(logs: Frame, *, gap: str = "5m") -> pl.DataFrame:
    """One row per call with its `run_id` and the `rule` that grouped it.

    A run is a session when the call has a session id; otherwise the calls of one
    caller separated by less than `gap` of inactivity.
    """
    pause = timedelta(**{k: float(v) for k, v in _duration_kwargs(gap).items()})
    calls = tool_calls(logs).with_columns(pl.col(f.CALLER_ID).fill_null("(unknown)"))
    sessions = calls.filter(pl.col(f.SESSION_ID).is_not_null()).with_columns(
        pl.lit("session").alias("rule"),
        (pl.lit("session:") + pl.col(f.SESSION_ID).str.slice(0, 8)).alias("run_id"),
    )
    rest = (
        calls.filter(pl.col(f.SESSION_ID).is_null())
        .sort(f.CALLER_ID, f.TIMESTAMP)
        .with_columns(
            (pl.col(f.TIMESTAMP).diff().over(f.CALLER_ID).fill_null(pause * 2) > pause)
            .cum_sum()
            .over(f.CALLER_ID)
            .alias("_n")
        )
        .with_columns(
            pl.lit("caller+gap").alias("rule"),
            (pl.col(f.CALLER_ID) + pl.lit("#") + pl.col("_n").cast(pl.String)).alias("run_id"),
        )
        .drop("_n")
    )
    return pl.concat([sessions, rest]).sort(f.TIMESTAMP)


def run_summary(calls_with_runs: pl.DataFrame) -> pl.DataFrame:
    """One row per run: `run_id, rule, caller_id, start, end, calls, errors, tools`."""
    return (
        calls_with_runs.group_by("run_id", "rule")
        .agg(
            pl.col(f.CALLER_ID).first(),
            pl.col("started").min().alias("start"),
            pl.col(f.TIMESTAMP).max().alias("end"),
            pl.len().alias("calls"),
            pl.col("failed").sum().alias("errors"),
            pl.col(f.TOOL_NAME).unique().sort().alias("tools"),
        )
        .sort("start")
    )
