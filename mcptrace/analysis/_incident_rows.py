"""What every incident detector shares: the row it yields, the thresholds, and small helpers over
collected lines (grouping events into bursts, picking request ids, naming durations)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import polars as pl

from mcptrace import _fields as f

RATE_REASONS = (f.R_RATE_LIMITED, f.R_SUSPENDED)
AUTH_REASONS = (f.R_UNAUTHENTICATED, f.R_FORBIDDEN)
MAX_IDS = 5


@dataclass(frozen=True)
class Thresholds:
    """When a symptom is an incident. The defaults keep a busy log's background noise out."""

    #: Time bucket for error and latency baselines.
    every: str = "10s"
    #: Events of one kind further apart than this are two incidents.
    gap: timedelta = timedelta(seconds=30)
    #: A dependency outage: this many failed calls, and this share of the service's calls in the window.
    outage_errors: int = 5
    outage_share: float = 0.5
    #: An error spike: this many own errors, at this share and this many times the tool's usual rate.
    spike_errors: int = 5
    spike_share: float = 0.3
    spike_factor: float = 3.0
    #: A latency regression: p95 this many times the tool's usual p95, and this many ms above it.
    latency_factor: float = 3.0
    latency_floor_ms: float = 200.0
    latency_min_calls: int = 3
    #: Refusals of one caller (rate limits) or one credential (auth) that make a storm or a burst.
    storm_refusals: int = 10
    auth_refusals: int = 5
    #: Loops: the fewest calls, and the least severity that makes an incident.
    loop_threshold: int = 5
    loop_severity: tuple[str, ...] = ("high", "medium")


@dataclass
class Row:
    """One incident, before it becomes a row of `incidents`."""

    kind: str
    start: datetime
    end: datetime
    severity: str
    subject: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)


def clustered(events: pl.DataFrame, by: str, gap: timedelta) -> pl.DataFrame:
    """`events` (sorted by time) with `_cluster`: a new number where `by` changes or after `gap` of quiet."""
    if events.is_empty():
        return events.with_columns(pl.lit(0, dtype=pl.Int64).alias("_cluster"))
    quiet = pl.col(f.TIMESTAMP).diff().over(by) > gap
    return events.sort(by, f.TIMESTAMP).with_columns(
        quiet.fill_null(True).cast(pl.Int64).cum_sum().over(by).alias("_cluster")
    )


def earliest(times: pl.Series) -> datetime:
    """The earliest of non-empty `times` (a datetime column)."""
    return cast(datetime, times.min())


def latest(times: pl.Series) -> datetime:
    return cast(datetime, times.max())


def seconds_between(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


def telling_ids(frame: pl.DataFrame, *more: str | None) -> list[str]:
    found = [i for i in frame[f.REQUEST_ID].drop_nulls().to_list()[:MAX_IDS]]
    return list(dict.fromkeys([*found, *(m for m in more if m)]))[:MAX_IDS]


def most_common(values: pl.Series, n: int = 2) -> str:
    common = values.drop_nulls().value_counts(sort=True).head(n)
    return ", ".join(str(v) for v in common[values.name or ""].to_list()) if common.height else ""


def bucket_of(limits: Thresholds) -> pl.Expr:
    return pl.col(f.TIMESTAMP).dt.truncate(limits.every).alias("_bucket")


def hot_stretches(buckets: pl.DataFrame, key: str, limits: Thresholds) -> Iterator[tuple[Any, datetime, datetime]]:
    """Runs of hot buckets (`_hot`) of each `key` value, quiet stretches up to `limits.gap` allowed
    inside: (key value, first bucket, last bucket)."""
    hot = buckets.filter(pl.col("_hot")).sort(key, "_bucket")
    step = bucket_width(limits)
    current: tuple[Any, datetime, datetime] | None = None
    for value, bucket in hot.select(key, "_bucket").iter_rows():
        if current and current[0] == value and bucket - current[2] <= step + limits.gap:
            current = (value, current[1], bucket)
            continue
        if current:
            yield current
        current = (value, bucket, bucket)
    if current:
        yield current


def bucket_width(limits: Thresholds) -> timedelta:
    t0 = datetime(2000, 1, 1)
    later: datetime = pl.Series([t0]).dt.offset_by(limits.every)[0]
    return later - t0


def shorten(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters, with an ellipsis when it was cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
