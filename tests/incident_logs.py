"""Generated logs with incidents planted in calm background traffic, and what was planted.

The background is what a healthy server logs: a few agents calling three tools
with varied arguments, latencies around 20 ms with a long tail, one call in a
hundred failing on its own, database and upstream calls that succeed. Each
planted incident is written the way the server writes it (tool-call lines with
their downstream calls, aggregated `request_refused` lines, lifecycle lines).

`python -m tests.incident_logs` prints precision and recall of
`analysis.incidents` per kind over many generated logs (the README quotes it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MINUTES = 12
PLANTABLE = (
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
#: Each plant's subject: what `incidents` should name.
SUBJECTS = {
    "dependency_outage": "upstream",
    "error_spike": "render_chart",
    "latency_regression": "search_database",
    "agent_loop": "agent-looper",
    "retry_storm": "agent-retrier",
    "rate_limit_storm": "agent-batch",
    "auth_failures": "10.0.0.9",
    "restart": "server",
    "resource_refused": "https://example.test/prompts/triage.md",
}
TOOLS = {"search_database": "sqlite", "fetch_upstream": "upstream", "render_chart": None}


@dataclass
class Plant:
    kind: str
    start: datetime
    end: datetime
    subject: str


class Log:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lines: list[dict[str, Any]] = []

    def add(self, at: datetime, event: str, **fields: Any) -> str:
        rid = f"req-{len(self.lines):06d}"
        self.lines.append({"timestamp": at, "event": event, "mcp_request_id": rid, "schema_version": 3, **fields})
        return rid

    def call(
        self,
        at: datetime,
        caller: str,
        tool: str,
        *,
        args: str | None = None,
        result: str | None = None,
        ms: float | None = None,
        failed: bool = False,
        downstream_failed: bool = False,
        error: str | None = None,
    ) -> str:
        ms = ms if ms is not None else self.rng.lognormvariate(3.0, 0.5)
        service = TOOLS.get(tool)
        downstream = []
        if service:
            down_ms = ms * 0.8
            downstream.append(
                {
                    "service": service,
                    "query_hash": "q",
                    "duration_ms": down_ms,
                    "status": "error" if downstream_failed else "success",
                    "error": "HTTP 503" if downstream_failed else None,
                }
            )
        bad = failed or downstream_failed
        return self.add(
            at,
            "tool_call",
            caller_id=caller,
            client_name=caller,
            client_version="1.0",
            tool_name=tool,
            arguments_hash=args or f"a{self.rng.randrange(10**9)}",
            result_hash=None if bad else (result or f"r{self.rng.randrange(10**9)}"),
            duration_ms=ms,
            status="error" if bad else "success",
            error=(error or "Error executing tool: upstream answered HTTP 503") if bad else None,
            downstream_calls=downstream,
        )


def background(log: Log) -> None:
    rng = log.rng
    log.add(T0, "server_started", mcp_request_id=None, message="serving")
    for n in range(4):
        caller = f"agent-{n}"
        t = T0 + timedelta(seconds=rng.uniform(0, 5))
        while t < T0 + timedelta(minutes=MINUTES):
            tool = rng.choice(list(TOOLS))
            log.call(t, caller, tool, failed=rng.random() < 0.01)
            t += timedelta(seconds=rng.uniform(0.3, 2.5))


def plant(log: Log, kind: str, start: datetime) -> Plant:
    rng = log.rng
    seconds = rng.uniform(20, 90)
    end = start + timedelta(seconds=seconds)

    def every(lo: float, hi: float) -> list[datetime]:
        out, t = [], start
        while t < end:
            out.append(t)
            t += timedelta(seconds=rng.uniform(lo, hi))
        return out

    if kind == "dependency_outage":
        for t in every(0.2, 1.0):
            log.call(t, f"agent-{rng.randrange(4)}", "fetch_upstream", ms=rng.uniform(2, 30), downstream_failed=True)
    elif kind == "error_spike":
        for t in every(0.3, 1.5):
            log.call(
                t,
                f"agent-{rng.randrange(4)}",
                "render_chart",
                failed=rng.random() < 0.9,
                error="Error executing tool render_chart: font cache corrupt",
            )
    elif kind == "latency_regression":
        for t in every(0.3, 1.5):
            log.call(t, f"agent-{rng.randrange(4)}", "search_database", ms=rng.uniform(900, 3000))
    elif kind == "agent_loop":
        times = every(0.08, 0.3)
        end = times[-1]
        for t in times:
            log.call(t, "agent-looper", "search_database", args="same-args", result="same-answer")
    elif kind == "retry_storm":
        times = every(0.1, 0.6)
        end = times[-1]
        for t in times:
            log.call(t, "agent-retrier", "fetch_upstream", args="doc-9", failed=True)
    elif kind in ("rate_limit_storm", "auth_failures"):
        reason = "rate_limited" if kind == "rate_limit_storm" else "unauthenticated"
        fields: dict[str, Any] = (
            {"caller_id": "agent-batch", "principal": "tok:batch", "http_status": 429}
            if kind == "rate_limit_storm"
            else {"client_address": "10.0.0.9", "http_status": 401, "error": "invalid or revoked token"}
        )
        for t in every(0.5, 3.0):
            n = rng.randint(1, 40) if kind == "rate_limit_storm" else rng.randint(1, 3)
            last = t + timedelta(seconds=rng.uniform(0, 0.4))
            log.add(
                t,
                "request_refused",
                status="refused",
                refusal_reason=reason,
                count=n,
                last_timestamp=last if n > 1 else None,
                **fields,
            )
    elif kind == "restart":
        end = start + timedelta(seconds=rng.uniform(1, 8))
        log.add(end, "server_started", mcp_request_id=None, message="serving")
        start = max((r["timestamp"] for r in log.lines if r["timestamp"] < end), default=start)
    elif kind == "resource_refused":
        end = start
        log.add(
            start,
            "resource_rejected",
            mcp_request_id=None,
            resource_url=SUBJECTS[kind],
            expected_sha256="a" * 64,
            actual_sha256="b" * 64,
        )
    return Plant(kind, start, end, SUBJECTS[kind])


def generated(seed: int, kinds: list[str]) -> tuple[pl.LazyFrame, list[Plant]]:
    """Background traffic and `kinds` planted, each in its own stretch of the log (a minute apart)."""
    rng = random.Random(seed)
    log = Log(rng)
    background(log)
    plants = []
    slots = rng.sample(range(1, MINUTES - 2), len(kinds))
    for kind, slot in zip(kinds, slots, strict=True):
        at = T0 + timedelta(minutes=slot, seconds=rng.uniform(0, 20))
        plants.append(plant(log, kind, at))
    return frame(log.lines), plants


def frame(lines: list[dict[str, Any]]) -> pl.LazyFrame:
    from mcptrace.logs._parse import read_schema

    schema = read_schema()
    rows = [{name: line.get(name) for name in schema} for line in lines]
    return pl.DataFrame(rows, schema=schema).sort("timestamp").lazy()


def matches(found: dict[str, Any], plant: Plant, slack: timedelta = timedelta(seconds=15)) -> bool:
    return (
        found["kind"] == plant.kind
        and found["subject"] == plant.subject
        and found["start"] <= plant.end + slack
        and plant.start - slack <= found["end"]
    )


@dataclass
class Tally:
    planted: int = 0
    recalled: int = 0
    reported: int = 0
    true: int = 0

    @property
    def precision(self) -> float:
        return self.true / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.recalled / self.planted if self.planted else 1.0


def evaluate(logs: int = 120, seed: int = 7) -> dict[str, Tally]:
    """Per kind over `logs` generated logs (0 to 3 plants each): plants found, and reports that are true."""
    from mcptrace.analysis import incidents

    rng = random.Random(seed)
    out = {k: Tally() for k in PLANTABLE}
    for n in range(logs):
        kinds = rng.sample(PLANTABLE, rng.randint(0, 3))
        lines, plants = generated(seed * 1000 + n, kinds)
        rows = incidents(lines).collect().to_dicts()
        for p in plants:
            out[p.kind].planted += 1
            out[p.kind].recalled += any(matches(row, p) for row in rows)
        for row in rows:
            tally = out.setdefault(row["kind"], Tally())
            tally.reported += 1
            tally.true += any(matches(row, p) for p in plants)
    return out


def table(results: dict[str, Tally]) -> str:
    lines = ["| kind | planted | found | reported | precision | recall |", "|---|---|---|---|---|---|"]
    total = Tally()
    for kind, t in results.items():
        lines.append(f"| {kind} | {t.planted} | {t.recalled} | {t.reported} | {t.precision:.2f} | {t.recall:.2f} |")
        total.planted += t.planted
        total.recalled += t.recalled
        total.reported += t.reported
        total.true += t.true
    lines.append(
        f"| all | {total.planted} | {total.recalled} | {total.reported} | {total.precision:.2f} | {total.recall:.2f} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(evaluate()))
