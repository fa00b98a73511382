"""Incidents in what the guards and the server's lifecycle wrote: refusals, restarts, refused resources."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._incident_rows import (
    AUTH_REASONS,
    RATE_REASONS,
    Row,
    Thresholds,
    clustered,
    earliest,
    latest,
    most_common,
    seconds_between,
    telling_ids,
)


def _refusals(lines: pl.DataFrame, reasons: tuple[str, ...], legacy_event: str) -> pl.DataFrame:
    """Refusal lines for `reasons` (version 3, weighted by `count`) or the older per-request event."""
    v3 = (pl.col(f.EVENT) == f.EV_REQUEST_REFUSED) & pl.col(f.REFUSAL_REASON).is_in(reasons)
    picked = lines.filter(v3.fill_null(False) | (pl.col(f.EVENT) == legacy_event))
    subject = pl.coalesce(pl.col(f.CALLER_ID), pl.col(f.PRINCIPAL), pl.col(f.CLIENT_ADDRESS), pl.lit("(unknown)"))
    return picked.with_columns(
        subject.alias("_subject"),
        pl.col(f.COUNT).fill_null(1).alias("_n"),
        pl.coalesce(pl.col(f.LAST_TIMESTAMP), pl.col(f.TIMESTAMP)).alias("_last"),
    )


def rate_limit_storms(lines: pl.DataFrame, limits: Thresholds) -> Iterator[Row]:
    refused = _refusals(lines, RATE_REASONS, f.EV_RATE_LIMITED)
    for (subject, _), group in clustered(refused, "_subject", limits.gap).group_by(
        "_subject", "_cluster", maintain_order=True
    ):
        n = int(group["_n"].sum())
        if n < limits.storm_refusals:
            continue
        start, end = earliest(group[f.TIMESTAMP]), latest(group["_last"])
        seconds = seconds_between(start, end)
        per_minute = n * 60 / max(seconds, 1.0)
        suspended = int(group.filter(pl.col(f.REFUSAL_REASON) == f.R_SUSPENDED)["_n"].sum())
        severity = "high" if n >= 500 or seconds >= 300 else "medium" if n >= 50 else "low"
        yield Row(
            "rate_limit_storm",
            start,
            end,
            severity,
            str(subject),
            f"{subject} had {n:,} requests refused over {seconds:.1f} s ({per_minute:,.0f}/min)"
            + (f", {suspended:,} of them while suspended" if suspended else ""),
            {"refused": n, "seconds": seconds, "per_minute": round(per_minute, 1)},
            telling_ids(group, *group[f.LAST_REQUEST_ID].drop_nulls().tail(1).to_list()),
        )


def auth_failures(lines: pl.DataFrame, limits: Thresholds) -> Iterator[Row]:
    refused = _refusals(lines, AUTH_REASONS, f.EV_AUTH_FAILED)
    for (subject, _), group in clustered(refused, "_subject", limits.gap).group_by(
        "_subject", "_cluster", maintain_order=True
    ):
        n = int(group["_n"].sum())
        if n < limits.auth_refusals:
            continue
        start, end = earliest(group[f.TIMESTAMP]), latest(group["_last"])
        seconds = seconds_between(start, end)
        statuses = "/".join(str(s) for s in group[f.HTTP_STATUS].drop_nulls().unique().sort().to_list())
        severity = "high" if n >= 100 or seconds >= 600 else "medium" if n >= 20 else "low"
        yield Row(
            "auth_failures",
            start,
            end,
            severity,
            str(subject),
            f"{n:,} requests from {subject} refused{f' with HTTP {statuses}' if statuses else ''} over "
            f"{seconds:.1f} s ({most_common(group[f.ERROR], 1) or 'credentials refused'})",
            {"refused": n, "seconds": seconds, "per_minute": round(n * 60 / max(seconds, 1.0), 1)},
            telling_ids(group, *group[f.LAST_REQUEST_ID].drop_nulls().tail(1).to_list()),
        )


def restarts(lines: pl.DataFrame) -> Iterator[Row]:
    life = lines.filter(pl.col(f.EVENT).is_in([f.EV_SERVER_STARTED, f.EV_SERVER_STOPPED]))
    previous: dict[str, Any] | None = None
    for row in life.iter_rows(named=True):
        if row[f.EVENT] == f.EV_SERVER_STARTED and previous is not None:
            before = lines.filter(pl.col(f.TIMESTAMP) < row[f.TIMESTAMP])[f.TIMESTAMP].max()
            if previous[f.EVENT] == f.EV_SERVER_STARTED:
                start = before if isinstance(before, datetime) else previous[f.TIMESTAMP]
                yield Row(
                    "restart",
                    start,
                    row[f.TIMESTAMP],
                    "high",
                    "server",
                    f"the server started again at {row[f.TIMESTAMP]:%H:%M:%S} UTC without having stopped "
                    f"(a crash or a kill); its last line before was at {start:%H:%M:%S} UTC",
                    {"seconds": seconds_between(start, row[f.TIMESTAMP])},
                )
            else:
                seconds = seconds_between(previous[f.TIMESTAMP], row[f.TIMESTAMP])
                yield Row(
                    "restart",
                    previous[f.TIMESTAMP],
                    row[f.TIMESTAMP],
                    "low",
                    "server",
                    f"the server stopped and started again {seconds:.1f} s later",
                    {"seconds": seconds},
                )
        previous = row
    for row in lines.filter(pl.col(f.EVENT) == f.EV_LOG_GAP).iter_rows(named=True):
        start = row[f.GAP_START] or row[f.TIMESTAMP]
        end = row[f.GAP_END] or row[f.TIMESTAMP]
        lost = row[f.DROPPED_LINES]
        yield Row(
            "restart",
            start,
            end,
            "medium",
            "log",
            f"the log lost {lost if lost is not None else 'some'} lines between {start:%H:%M:%S} and "
            f"{end:%H:%M:%S} UTC ({row[f.MESSAGE] or 'log_gap'})",
            {"lost_lines": lost, "seconds": seconds_between(start, end)},
        )
    for row in lines.filter(pl.col(f.EVENT) == f.EV_TARGET_EXITED).iter_rows(named=True):
        code = row[f.EXIT_CODE]
        yield Row(
            "restart",
            row[f.TIMESTAMP],
            row[f.TIMESTAMP],
            "low" if code == 0 else "high",
            str(row[f.TARGET] or "target"),
            f"the proxied server exited with status {code}",
            {},
        )


def resources_refused(lines: pl.DataFrame, limits: Thresholds) -> Iterator[Row]:
    rejected = lines.filter(pl.col(f.EVENT) == f.EV_RESOURCE_REJECTED)
    for (url, _), group in clustered(rejected, f.RESOURCE_URL, limits.gap).group_by(
        f.RESOURCE_URL, "_cluster", maintain_order=True
    ):
        start, end = earliest(group[f.TIMESTAMP]), latest(group[f.TIMESTAMP])
        yield Row(
            "resource_refused",
            start,
            end,
            "high",
            str(url),
            f"the pinned resource {url} failed its hash check {group.height} time"
            f"{'s' if group.height != 1 else ''}; it was not served",
            {"refused": group.height, "seconds": seconds_between(start, end)},
            telling_ids(group),
        )
