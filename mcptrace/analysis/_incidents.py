"""What went wrong, found and ranked: one row per incident, the cause named once.

Each kind is found by what it looks like in the log lines:

- `dependency_outage`: one downstream service failing most of its calls (or its
  breaker opening), named once for every tool and caller it broke;
- `error_spike`: one tool failing on its own (no downstream failure) far above
  its usual error rate;
- `latency_regression`: one tool's p95 far above its own usual p95 (the lower
  quartile of its p95 per time bucket, so a long regression does not become the norm);
- `agent_loop`: a loop episode of `analysis.loops` (not a poll, not a retry
  storm) of medium or high severity;
- `retry_storm`: one caller repeating one failing call;
- `rate_limit_storm`: one caller's rate-limit refusals and suspensions;
- `auth_failures`: a burst of refused credentials, by who presented them;
- `restart`: a server that started again without stopping (a crash), a stop and
  start, a stdio server the proxy saw exit, or lines the log lost (`log_gap`);
- `resource_refused`: a pinned resource whose hash did not match.

A symptom that another incident explains is not listed twice: tool errors with
a failed downstream call belong to the outage, loops of a caller that is being
rate limited at the time belong to its storm, and failing repeats are retry
storms, not error spikes.

`incidents` takes the lines with the columns of `COLUMNS` (fewer are fine:
what is missing is not looked for) and returns the columns of
`INCIDENT_COLUMNS`, most severe first. Times are UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._loops import LOOP_KINDS, loops

KINDS = (
    "dependency_outage",
    "error_spike",
    "latency_regression",
    "agent_loop",
    "retry_storm",
    "rate_limit_storm",
    "auth_failures",
    "restart",
    "resource_refused",
)
SEVERITIES = ("high", "medium", "low")
INCIDENT_COLUMNS = ["kind", "start", "end", "severity", "subject", "summary", "evidence", "request_ids"]
#: What `evidence` may hold (null when it does not apply to the kind).
EVIDENCE_FIELDS = {
    "calls": pl.Int64,
    "errors": pl.Int64,
    "refused": pl.Int64,
    "callers": pl.Int64,
    "seconds": pl.Float64,
    "per_minute": pl.Float64,
    "p95_ms": pl.Float64,
    "baseline_p95_ms": pl.Float64,
    "lost_lines": pl.Int64,
}
#: The log columns incidents are found from.
COLUMNS = [
    f.TIMESTAMP,
    f.EVENT,
    f.SCHEMA_VERSION,
    f.REQUEST_ID,
    f.SESSION_ID,
    f.CALLER_ID,
    f.CLIENT_NAME,
    f.CLIENT_VERSION,
    f.TRACE_ID,
    f.PARENT_SPAN_ID,
    f.BAGGAGE,
    f.TOOL_NAME,
    f.ARGUMENTS_HASH,
    f.RESULT_HASH,
    f.INPUT_TOKEN_COUNT,
    f.DURATION_MS,
    f.STATUS,
    f.ERROR,
    f.HTTP_STATUS,
    f.DOWNSTREAM_CALLS,
    f.SERVICE,
    f.BREAKER_STATE,
    f.REFUSAL_REASON,
    f.COUNT,
    f.LAST_REQUEST_ID,
    f.LAST_TIMESTAMP,
    f.PRINCIPAL,
    f.CLIENT_ADDRESS,
    f.MESSAGE,
    f.DROPPED_LINES,
    f.GAP_START,
    f.GAP_END,
    f.RESOURCE_URL,
    f.TARGET,
    f.EXIT_CODE,
]
#: The events incidents are found from (an event-filtered load keeps these).
EVENTS = [
    f.EV_TOOL_CALL,
    f.EV_REQUEST_REFUSED,
    f.EV_AUTH_FAILED,
    f.EV_RATE_LIMITED,
    f.EV_BREAKER_STATE,
    f.EV_SERVER_STARTED,
    f.EV_SERVER_STOPPED,
    f.EV_LOG_GAP,
    f.EV_RESOURCE_REJECTED,
    f.EV_TARGET_EXITED,
]
_RATE_REASONS = (f.R_RATE_LIMITED, f.R_SUSPENDED)
_AUTH_REASONS = (f.R_UNAUTHENTICATED, f.R_FORBIDDEN)
_IDS = 5


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
class _Row:
    kind: str
    start: datetime
    end: datetime
    severity: str
    subject: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)


def incidents(frame: pl.LazyFrame, **thresholds: Any) -> pl.LazyFrame:
    """Incidents in the lines of `frame`, most severe first: the columns of `INCIDENT_COLUMNS`.

    `thresholds` are fields of `Thresholds`. The lines of the kinds in `EVENTS` are read once
    (only the columns in `COLUMNS`), so a load filtered to those events and columns is enough.
    """
    limits = Thresholds(**thresholds)
    schema = frame.collect_schema()
    wanted = [c for c in COLUMNS if c in schema]
    lines = frame.select(wanted).filter(pl.col(f.EVENT).is_in(EVENTS)).collect()
    for name in COLUMNS:
        if name not in lines.columns:
            lines = lines.with_columns(pl.lit(None).alias(name))
    lines = lines.sort(f.TIMESTAMP)
    calls = lines.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
    rows: list[_Row] = []
    outages = list(_dependency_outages(calls, lines, limits))
    storms = list(_rate_limit_storms(lines, limits))
    episodes = _episodes(calls, limits)
    retried = set(episodes.filter(pl.col("kind") == "retry_storm")["request_ids"].explode().drop_nulls())
    rows += outages
    rows += storms
    rows += _error_spikes(calls, limits, exclude=retried)
    rows += _latency_regressions(calls, limits)
    rows += _loops(episodes, limits, storms)
    rows += _auth_failures(lines, limits)
    rows += _restarts(lines)
    rows += _resources(lines, limits)
    return _frame(rows).lazy()


def _frame(rows: list[_Row]) -> pl.DataFrame:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    rows = sorted(rows, key=lambda r: (rank[r.severity], r.start, r.kind))
    evidence = pl.Struct(EVIDENCE_FIELDS)
    schema: dict[str, pl.DataType | type[pl.DataType]] = {
        "kind": pl.String,
        "start": pl.Datetime("us", "UTC"),
        "end": pl.Datetime("us", "UTC"),
        "severity": pl.String,
        "subject": pl.String,
        "summary": pl.String,
        "evidence": evidence,
        "request_ids": pl.List(pl.String),
    }
    data = [
        {
            "kind": r.kind,
            "start": r.start,
            "end": r.end,
            "severity": r.severity,
            "subject": r.subject,
            "summary": r.summary,
            "evidence": {k: r.evidence.get(k) for k in EVIDENCE_FIELDS},
            "request_ids": r.request_ids[:_IDS],
        }
        for r in rows
    ]
    return pl.DataFrame(data, schema=schema)


# -- helpers ---------------------------------------------------------------------------------------


def _clustered(events: pl.DataFrame, by: str, gap: timedelta) -> pl.DataFrame:
    """`events` (sorted by time) with `_cluster`: a new number where `by` changes or after `gap` of quiet."""
    if events.is_empty():
        return events.with_columns(pl.lit(0, dtype=pl.Int64).alias("_cluster"))
    quiet = pl.col(f.TIMESTAMP).diff().over(by) > gap
    return events.sort(by, f.TIMESTAMP).with_columns(
        quiet.fill_null(True).cast(pl.Int64).cum_sum().over(by).alias("_cluster")
    )


def _first(times: pl.Series) -> datetime:
    """The earliest of non-empty `times` (a datetime column)."""
    return cast(datetime, times.min())


def _last(times: pl.Series) -> datetime:
    return cast(datetime, times.max())


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


def _ids(frame: pl.DataFrame, *more: str | None) -> list[str]:
    found = [i for i in frame[f.REQUEST_ID].drop_nulls().to_list()[:_IDS]]
    return list(dict.fromkeys([*found, *(m for m in more if m)]))[:_IDS]


def _top(values: pl.Series, n: int = 2) -> str:
    common = values.drop_nulls().value_counts(sort=True).head(n)
    return ", ".join(str(v) for v in common[values.name or ""].to_list()) if common.height else ""


def _bucket(limits: Thresholds) -> pl.Expr:
    return pl.col(f.TIMESTAMP).dt.truncate(limits.every).alias("_bucket")


def _hot_stretches(buckets: pl.DataFrame, key: str, limits: Thresholds) -> Iterator[tuple[Any, datetime, datetime]]:
    """Runs of hot buckets (`_hot`) of each `key` value, quiet stretches up to `limits.gap` allowed
    inside: (key value, first bucket, last bucket)."""
    hot = buckets.filter(pl.col("_hot")).sort(key, "_bucket")
    step = _bucket_width(limits)
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


def _bucket_width(limits: Thresholds) -> timedelta:
    t0 = datetime(2000, 1, 1)
    later: datetime = pl.Series([t0]).dt.offset_by(limits.every)[0]
    return later - t0


# -- detectors -------------------------------------------------------------------------------------


def _downstream(calls: pl.DataFrame) -> pl.DataFrame:
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


def _dependency_outages(calls: pl.DataFrame, lines: pl.DataFrame, limits: Thresholds) -> Iterator[_Row]:
    down = _downstream(calls)
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
    for (service, _), group in _clustered(marks, f.SERVICE, limits.gap).group_by(
        f.SERVICE, "_cluster", maintain_order=True
    ):
        start, end = _first(group[f.TIMESTAMP]), _last(group[f.TIMESTAMP])
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
        seconds = _seconds(start, end)
        severity = (
            "high" if errors >= 20 or seconds >= 60 or breaker else "medium" if errors >= 10 or callers >= 2 else "low"
        )
        reasons = _top(bad[f.ERROR]) if errors else "breaker open"
        tools = ", ".join(sorted(bad[f.TOOL_NAME].drop_nulls().unique().to_list())) if errors else ""
        summary = (
            f"{service} failed {errors} of {total} calls ({share:.0%}) over {seconds:.1f} s ({reasons})"
            + (f", breaking {tools} for {callers} caller{'s' if callers != 1 else ''}" if tools else "")
            + ("; its breaker opened" if breaker else "")
        )
        yield _Row(
            "dependency_outage",
            start,
            end,
            severity,
            str(service),
            summary,
            {"calls": total, "errors": errors, "callers": callers, "seconds": seconds},
            _ids(bad),
        )


def _error_spikes(calls: pl.DataFrame, limits: Thresholds, *, exclude: set[str]) -> Iterator[_Row]:
    if calls.is_empty():
        return
    downstream_failed = (
        pl.col(f.DOWNSTREAM_CALLS).list.eval(pl.element().struct.field(f.STATUS) == f.FAILURE).list.any()
        if calls[f.DOWNSTREAM_CALLS].dtype != pl.Null
        else pl.lit(False)
    )
    own = calls.filter(~pl.col(f.REQUEST_ID).is_in(list(exclude))).with_columns(
        ((pl.col(f.STATUS) == f.FAILURE) & ~downstream_failed.fill_null(False)).fill_null(False).alias("_own"),
        _bucket(limits),
    )
    usual = own.group_by(f.TOOL_NAME).agg(pl.col("_own").mean().alias("_usual"))
    buckets = (
        own.group_by(f.TOOL_NAME, "_bucket")
        .agg(pl.len().alias("_calls"), pl.col("_own").sum().alias("_errors"))
        .join(usual, on=f.TOOL_NAME)
        .with_columns(
            (
                (pl.col("_errors") >= 2)
                & (pl.col("_errors") / pl.col("_calls") >= limits.spike_share)
                & (pl.col("_errors") / pl.col("_calls") >= limits.spike_factor * pl.col("_usual"))
            ).alias("_hot")
        )
    )
    for tool, first, last in _hot_stretches(buckets, f.TOOL_NAME, limits):
        window = own.filter((pl.col(f.TOOL_NAME) == tool) & pl.col("_bucket").is_between(first, last))
        bad = window.filter(pl.col("_own"))
        if bad.height < limits.spike_errors:
            continue
        start, end = _first(bad[f.TIMESTAMP]), _last(bad[f.TIMESTAMP])
        usual_rate = float(usual.filter(pl.col(f.TOOL_NAME) == tool)["_usual"][0])
        share = bad.height / window.height
        seconds = _seconds(start, end)
        callers = bad[f.CALLER_ID].n_unique()
        severity = (
            "high" if bad.height >= 50 or seconds >= 300 else "medium" if bad.height >= 15 or callers >= 3 else "low"
        )
        yield _Row(
            "error_spike",
            start,
            end,
            severity,
            str(tool),
            f"{tool} failed {bad.height} of {window.height} calls ({share:.0%}, usually {usual_rate:.0%}) "
            f"over {seconds:.1f} s for {callers} caller{'s' if callers != 1 else ''}: {_top(bad[f.ERROR], 1)[:120]}",
            {"calls": window.height, "errors": bad.height, "callers": callers, "seconds": seconds},
            _ids(bad),
        )


def _latency_regressions(calls: pl.DataFrame, limits: Thresholds) -> Iterator[_Row]:
    ok = calls.filter((pl.col(f.STATUS) == f.SUCCESS) & pl.col(f.DURATION_MS).is_not_null())
    if ok.is_empty():
        return
    ok = ok.with_columns(_bucket(limits))
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
    for tool, first, last in _hot_stretches(buckets, f.TOOL_NAME, limits):
        baseline = float(usual.filter(pl.col(f.TOOL_NAME) == tool)["_usual"][0])
        window = ok.filter((pl.col(f.TOOL_NAME) == tool) & pl.col("_bucket").is_between(first, last))
        slow = window.filter(pl.col(f.DURATION_MS) >= limits.latency_factor * baseline).sort(
            f.DURATION_MS, descending=True
        )
        if slow.height < limits.latency_min_calls:
            continue
        p95 = float(window[f.DURATION_MS].quantile(0.95, "linear") or 0.0)
        began = slow.select(pl.col(f.TIMESTAMP) - pl.duration(microseconds=pl.col(f.DURATION_MS) * 1000))
        start = _first(began.to_series())  # when the first slow call began
        end = _last(slow[f.TIMESTAMP])
        seconds = _seconds(start, end)
        ratio = p95 / baseline if baseline > 0 else float("inf")
        severity = "high" if ratio >= 10 or seconds >= 300 else "medium" if ratio >= 5 or seconds >= 60 else "low"
        yield _Row(
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
            _ids(slow),
        )


def _episodes(calls: pl.DataFrame, limits: Thresholds) -> pl.DataFrame:
    if calls.is_empty():
        return pl.DataFrame(schema={"kind": pl.String, "request_ids": pl.List(pl.String)})
    return loops(calls.lazy(), threshold=limits.loop_threshold).collect()


def _loops(episodes: pl.DataFrame, limits: Thresholds, storms: list[_Row]) -> Iterator[_Row]:
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
        seconds = _seconds(e["start"], e["end"])
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
        yield _Row(
            "retry_storm" if kind == "retry_storm" else "agent_loop",
            e["start"],
            e["end"],
            e["severity"],
            str(caller),
            summary,
            {"calls": e["count"], "errors": e["errors"], "seconds": seconds, "per_minute": round(e["rate"], 1)},
            [e["request_ids"][0], e["request_ids"][-1], *e["request_ids"][1:]] if e["request_ids"] else [],
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


def _rate_limit_storms(lines: pl.DataFrame, limits: Thresholds) -> Iterator[_Row]:
    refused = _refusals(lines, _RATE_REASONS, f.EV_RATE_LIMITED)
    for (subject, _), group in _clustered(refused, "_subject", limits.gap).group_by(
        "_subject", "_cluster", maintain_order=True
    ):
        n = int(group["_n"].sum())
        if n < limits.storm_refusals:
            continue
        start, end = _first(group[f.TIMESTAMP]), _last(group["_last"])
        seconds = _seconds(start, end)
        per_minute = n * 60 / max(seconds, 1.0)
        suspended = int(group.filter(pl.col(f.REFUSAL_REASON) == f.R_SUSPENDED)["_n"].sum())
        severity = "high" if n >= 500 or seconds >= 300 else "medium" if n >= 50 else "low"
        yield _Row(
            "rate_limit_storm",
            start,
            end,
            severity,
            str(subject),
            f"{subject} had {n:,} requests refused over {seconds:.1f} s ({per_minute:,.0f}/min)"
            + (f", {suspended:,} of them while suspended" if suspended else ""),
            {"refused": n, "seconds": seconds, "per_minute": round(per_minute, 1)},
            _ids(group, *group[f.LAST_REQUEST_ID].drop_nulls().tail(1).to_list()),
        )


def _auth_failures(lines: pl.DataFrame, limits: Thresholds) -> Iterator[_Row]:
    refused = _refusals(lines, _AUTH_REASONS, f.EV_AUTH_FAILED)
    for (subject, _), group in _clustered(refused, "_subject", limits.gap).group_by(
        "_subject", "_cluster", maintain_order=True
    ):
        n = int(group["_n"].sum())
        if n < limits.auth_refusals:
            continue
        start, end = _first(group[f.TIMESTAMP]), _last(group["_last"])
        seconds = _seconds(start, end)
        statuses = "/".join(str(s) for s in group[f.HTTP_STATUS].drop_nulls().unique().sort().to_list())
        severity = "high" if n >= 100 or seconds >= 600 else "medium" if n >= 20 else "low"
        yield _Row(
            "auth_failures",
            start,
            end,
            severity,
            str(subject),
            f"{n:,} requests from {subject} refused{f' with HTTP {statuses}' if statuses else ''} over "
            f"{seconds:.1f} s ({_top(group[f.ERROR], 1) or 'credentials refused'})",
            {"refused": n, "seconds": seconds, "per_minute": round(n * 60 / max(seconds, 1.0), 1)},
            _ids(group, *group[f.LAST_REQUEST_ID].drop_nulls().tail(1).to_list()),
        )


def _restarts(lines: pl.DataFrame) -> Iterator[_Row]:
    life = lines.filter(pl.col(f.EVENT).is_in([f.EV_SERVER_STARTED, f.EV_SERVER_STOPPED]))
    previous: dict[str, Any] | None = None
    for row in life.iter_rows(named=True):
        if row[f.EVENT] == f.EV_SERVER_STARTED and previous is not None:
            before = lines.filter(pl.col(f.TIMESTAMP) < row[f.TIMESTAMP])[f.TIMESTAMP].max()
            if previous[f.EVENT] == f.EV_SERVER_STARTED:
                start = before if isinstance(before, datetime) else previous[f.TIMESTAMP]
                yield _Row(
                    "restart",
                    start,
                    row[f.TIMESTAMP],
                    "high",
                    "server",
                    f"the server started again at {row[f.TIMESTAMP]:%H:%M:%S} UTC without having stopped "
                    f"(a crash or a kill); its last line before was at {start:%H:%M:%S} UTC",
                    {"seconds": _seconds(start, row[f.TIMESTAMP])},
                )
            else:
                seconds = _seconds(previous[f.TIMESTAMP], row[f.TIMESTAMP])
                yield _Row(
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
        yield _Row(
            "restart",
            start,
            end,
            "medium",
            "log",
            f"the log lost {lost if lost is not None else 'some'} lines between {start:%H:%M:%S} and "
            f"{end:%H:%M:%S} UTC ({row[f.MESSAGE] or 'log_gap'})",
            {"lost_lines": lost, "seconds": _seconds(start, end)},
        )
    for row in lines.filter(pl.col(f.EVENT) == f.EV_TARGET_EXITED).iter_rows(named=True):
        code = row[f.EXIT_CODE]
        yield _Row(
            "restart",
            row[f.TIMESTAMP],
            row[f.TIMESTAMP],
            "low" if code == 0 else "high",
            str(row[f.TARGET] or "target"),
            f"the proxied server exited with status {code}",
            {},
        )


def _resources(lines: pl.DataFrame, limits: Thresholds) -> Iterator[_Row]:
    rejected = lines.filter(pl.col(f.EVENT) == f.EV_RESOURCE_REJECTED)
    for (url, _), group in _clustered(rejected, f.RESOURCE_URL, limits.gap).group_by(
        f.RESOURCE_URL, "_cluster", maintain_order=True
    ):
        start, end = _first(group[f.TIMESTAMP]), _last(group[f.TIMESTAMP])
        yield _Row(
            "resource_refused",
            start,
            end,
            "high",
            str(url),
            f"the pinned resource {url} failed its hash check {group.height} time"
            f"{'s' if group.height != 1 else ''}; it was not served",
            {"refused": group.height, "seconds": _seconds(start, end)},
            _ids(group),
        )
