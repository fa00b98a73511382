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

from typing import Any

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._incident_calls import (
    dependency_outages,
    episodes_of,
    error_spikes,
    latency_regressions,
    loop_incidents,
)
from mcptrace.analysis._incident_events import auth_failures, rate_limit_storms, resources_refused, restarts
from mcptrace.analysis._incident_rows import MAX_IDS, Row, Thresholds

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
    rows: list[Row] = []
    outages = list(dependency_outages(calls, lines, limits))
    storms = list(rate_limit_storms(lines, limits))
    episodes = episodes_of(calls, limits)
    retried = set(episodes.filter(pl.col("kind") == "retry_storm")["request_ids"].explode().drop_nulls())
    rows += outages
    rows += storms
    rows += error_spikes(calls, limits, exclude=retried)
    rows += latency_regressions(calls, limits)
    rows += loop_incidents(episodes, limits, storms)
    rows += auth_failures(lines, limits)
    rows += restarts(lines)
    rows += resources_refused(lines, limits)
    return _frame(rows).lazy()


def _frame(rows: list[Row]) -> pl.DataFrame:
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
            "request_ids": r.request_ids[:MAX_IDS],
        }
        for r in rows
    ]
    return pl.DataFrame(data, schema=schema)
