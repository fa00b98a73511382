"""Incidents in the tool calls: a dependency failing, a tool failing or slowing down, loops and retry storms."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._incident_rows import (
    Row,
    Thresholds,
    bucket_of,
    clustered,
    earliest,
    hot_stretches,
    latest,
    most_common,
    seconds_between,
    shorten,
    telling_ids,
)
from mcptrace.analysis._loops import LOOP_KINDS, loops


def downstream_calls(calls: pl.DataFrame) -> pl.DataFrame:
    """One row per downstream call, from the tool-call lines that carry them."""
    if calls.is_empty() or calls[f.DOWNSTREAM_CALLS].dtype == pl.Null:
        return pl.DataFrame()
    return (
        calls.select(f.TIMESTAMP, f.REQUEST_ID, f.CALLER_ID, f.TOOL_NAME, f.DOWNSTREAM_CALLS)
        .explode(f.DOWNSTREAM_CALLS)
        .drop_nulls(f.DOWNSTREAM_CALLS)
        .with_columns(
            pl.col(f.DOWNSTREAM_CALLS).struct.field(f.SERVICE).alias(f.SERVICE),
            pl.col(f.DOWNSTREAM_CALLS).struct.field(f.STATUS).alias(f.STATUS),
            pl.col(f.DOWNSTREAM_CALLS).struct.field(f.ERROR).alias(f.ERROR),
        )
        .drop(f.DOWNSTREAM_CALLS)
        .sort(f.TIMESTAMP)
    )


def dependency_outages(calls: pl.DataFrame, lines: pl.DataFrame, limits: Thresholds) -> Iterator[Row]:
    down = downstream_calls(calls)
    opened = lines.filter((pl.col(f.EVENT) == f.EV_BREAKER_STATE) & (pl.col(f.BREAKER_STATE) == "open")).select(
        f.TIMESTAMP, f.SERVICE
    )
    if down.is_empty() and opened.is_empty():
        return
    failed = down.filter(pl.col(f.STATUS) == f.FAILURE) if down.height else down
    parts = [opened.with_columns(pl.lit(True).alias("_breaker"))] if opened.height else []
    if failed.height:
        parts.append(failed.select(f.TIMESTAMP, f.SERVICE, pl.lit(False).alias("_breaker")))
    if not parts:
        return
    marks = pl.concat(parts, how="vertical_relaxed").sort(f.TIMESTAMP)
    for (service, _), group in clustered(marks, f.SERVICE, limits.gap).group_by(
        f.SERVICE, "_cluster", maintain_order=True
    ):
        start, end = earliest(group[f.TIMESTAMP]), latest(group[f.TIMESTAMP])
        breaker = bool(group["_breaker"].any())
        window = (
            down.filter((pl.col(f.SERVICE) == service) & pl.col(f.TIMESTAMP).is_between(start, end))
            if down.height
            else down
        )
        bad = window.filter(pl.col(f.STATUS) == f.FAILURE) if window.height else window
        errors, total = bad.height, window.height
        share = errors / total if total else 1.0
        if not breaker and (errors < limits.outage_errors or share < limits.outage_share):
            continue
        callers = bad[f.CALLER_ID].n_unique() if errors else 0
        seconds = seconds_between(start, end)
        severity = (
            "high" if errors >= 20 or seconds >= 60 or breaker else "medium" if errors >= 10 or callers >= 2 else "low"
        )
        reasons = most_common(bad[f.ERROR]) if errors else "breaker open"
        tools = ", ".join(sorted(bad[f.TOOL_NAME].drop_nulls().unique().to_list())) if errors else ""
        summary = (
            f"{service} failed {errors} of {total} calls ({share:.0%}) over {seconds:.1f} s ({reasons})"
            + (f", breaking {tools} for {callers} caller{'s' if callers != 1 else ''}" if tools else "")
            + ("; its breaker opened" if breaker else "")
        )
        yield Row(
            "dependency_outage",
            start,
            end,
            severity,
            str(service),
            summary,
            {"calls": total, "errors": errors, "callers": callers, "seconds": seconds},
            telling_ids(bad),
        )


def error_spikes(calls: pl.DataFrame, limits: Thresholds, *, exclude: set[str]) -> Iterator[Row]:
    if calls.is_empty():
        return
    downstream_failed = (
        pl.col(f.DOWNSTREAM_CALLS).list.eval(pl.element().struct.field(f.STATUS) == f.FAILURE).list.any()
        if calls[f.DOWNSTREAM_CALLS].dtype != pl.Null
        else pl.lit(False)
    )
    own = calls.filter(~pl.col(f.REQUEST_ID).is_in(list(exclude))).with_columns(
        ((pl.col(f.STATUS) == f.FAILURE) & ~downstream_failed.fill_null(False)).fill_null(False).alias("_own"),
        bucket_of(limits),
    )
    usual = own.group_by(f.TOOL_NAME).agg(pl.col("_own").mean().alias("_usual"))
    buckets = (
        own.group_by(f.TOOL_NAME, "_bucket")
        .agg(pl.len().alias("_calls"), pl.col("_own").sum().alias("_errors"))
        .join(usual, on=f.TOOL_NAME)
        .with_columns(
            (
                (pl.col("_errors") >= 3)
                & (pl.col("_errors") / pl.col("_calls") >= limits.spike_share)
                & (pl.col("_errors") / pl.col("_calls") >= limits.spike_factor * pl.col("_usual"))
            ).alias("_hot")
        )
    )
    for tool, first, last in hot_stretches(buckets, f.TOOL_NAME, limits):
        window = own.filter((pl.col(f.TOOL_NAME) == tool) & pl.col("_bucket").is_between(first, last))
        bad = window.filter(pl.col("_own"))
        if bad.height < limits.spike_errors:
            continue
        start, end = earliest(bad[f.TIMESTAMP]), latest(bad[f.TIMESTAMP])
        usual_rate = float(usual.filter(pl.col(f.TOOL_NAME) == tool)["_usual"][0])
        share = bad.height / window.height
        seconds = seconds_between(start, end)
        callers = bad[f.CALLER_ID].n_unique()
        severity = (
            "high" if bad.height >= 50 or seconds >= 300 else "medium" if bad.height >= 15 or callers >= 3 else "low"
        )
        yield Row(
            "error_spike",
            start,
            end,
            severity,
            str(tool),
            f"{tool} failed {bad.height} of {window.height} calls ({share:.0%}, usually {usual_rate:.0%}) "
            f"over {seconds:.1f} s for {callers} caller{'s' if callers != 1 else ''}: "
            f"{shorten(most_common(bad[f.ERROR], 1))}",
            {"calls": window.height, "errors": bad.height, "callers": callers, "seconds": seconds},
            telling_ids(bad),
        )


def latency_regressions(calls: pl.DataFrame, limits: Thresholds) -> Iterator[Row]:
    ok = calls.filter((pl.col(f.STATUS) == f.SUCCESS) & pl.col(f.DURATION_MS).is_not_null())
    if ok.is_empty():
        return
    ok = ok.with_columns(bucket_of(limits))
    per_bucket = (
        ok.group_by(f.TOOL_NAME, "_bucket")
        .agg(pl.len().alias("_calls"), pl.col(f.DURATION_MS).quantile(0.95, "linear").alias("_p95"))
        .filter(pl.col("_calls") >= limits.latency_min_calls)
    )
    usual = (
        per_bucket.group_by(f.TOOL_NAME)
        .agg(pl.col("_p95").quantile(0.25, "linear").alias("_usual"), pl.len().alias("_buckets"))
        .filter(pl.col("_buckets") >= 4)
    )
    buckets = per_bucket.join(usual, on=f.TOOL_NAME).with_columns(
        (
            (pl.col("_p95") >= limits.latency_factor * pl.col("_usual"))
            & (pl.col("_p95") - pl.col("_usual") >= limits.latency_floor_ms)
        ).alias("_hot")
    )
    for tool, first, last in hot_stretches(buckets, f.TOOL_NAME, limits):
        baseline = float(usual.filter(pl.col(f.TOOL_NAME) == tool)["_usual"][0])
        window = ok.filter((pl.col(f.TOOL_NAME) == tool) & pl.col("_bucket").is_between(first, last))
        slow = window.filter(pl.col(f.DURATION_MS) >= limits.latency_factor * baseline).sort(
            f.DURATION_MS, f.REQUEST_ID, descending=[True, False], nulls_last=True
        )
        if slow.height < limits.latency_min_calls:
            continue
        p95 = float(window[f.DURATION_MS].quantile(0.95, "linear") or 0.0)
        began = slow.select(pl.col(f.TIMESTAMP) - pl.duration(microseconds=pl.col(f.DURATION_MS) * 1000))
        start = earliest(began.to_series())  # when the first slow call began
        end = latest(slow[f.TIMESTAMP])
        seconds = seconds_between(start, end)
        ratio = p95 / baseline if baseline > 0 else float("inf")
        severity = "high" if ratio >= 10 or seconds >= 300 else "medium" if ratio >= 5 or seconds >= 60 else "low"
        yield Row(
            "latency_regression",
            start,
            end,
            severity,
            str(tool),
            f"{tool} p95 {p95:,.0f} ms against its usual {baseline:,.0f} ms ({ratio:.0f}x) over {seconds:.1f} s; "
            f"{slow.height} of {window.height} calls slow",
            {
                "calls": window.height,
                "p95_ms": round(p95, 1),
                "baseline_p95_ms": round(baseline, 1),
                "seconds": seconds,
            },
            telling_ids(slow),
        )


def episodes_of(calls: pl.DataFrame, limits: Thresholds) -> pl.DataFrame:
    if calls.is_empty():
        return pl.DataFrame(schema={"kind": pl.String, "request_ids": pl.List(pl.String)})
    return loops(calls.lazy(), threshold=limits.loop_threshold).collect()


def loop_incidents(episodes: pl.DataFrame, limits: Thresholds, storms: list[Row]) -> Iterator[Row]:
    for e in episodes.iter_rows(named=True):
        kind = e["kind"]
        if kind not in (*LOOP_KINDS, "retry_storm"):
            continue
        caller = e[f.CALLER_ID] or "(unknown)"
        if kind != "retry_storm":
            if e["severity"] not in limits.loop_severity:
                continue
            if any(s.subject == caller and s.start <= e["end"] and e["start"] <= s.end for s in storms):
                continue  # the storm is the incident; its calls are not a loop to chase
        seconds = seconds_between(e["start"], e["end"])
        what = {
            "repeat": "the same arguments",
            "cycle": "the same cycle of calls",
            "near_duplicate": "reworded arguments, the same answer",
            "retry_storm": "the same arguments, failing",
        }[kind]
        tools = e[f.TOOL_NAME]
        errors = f", {e['errors']} errors" if e["errors"] else ""
        summary = (
            f"{caller} called {tools} with {what} {e['count']} times in {seconds:.1f} s ({e['rate']:,.0f}/min{errors})"
        )
        yield Row(
            "retry_storm" if kind == "retry_storm" else "agent_loop",
            e["start"],
            e["end"],
            e["severity"],
            str(caller),
            summary,
            {"calls": e["count"], "errors": e["errors"], "seconds": seconds, "per_minute": round(e["rate"], 1)},
            [e["request_ids"][0], e["request_ids"][-1], *e["request_ids"][1:]] if e["request_ids"] else [],
        )
