"""Build `sample_logs/README.md` from the logs themselves, so every window and request id in it is true.

Each incident is found by what it looks like in the log lines (slow successes,
failing upstream calls, one caller repeating one call), then compared with
`planted.toml`, which records what the generator switched on and when.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mcptrace import _fields as f
from mcptrace._schema import polars_schema

#: A call is slow when it takes this many times its tool's median (and at least SLOW_FLOOR_MS).
SLOW_FACTOR = 3.0
SLOW_FLOOR_MS = 1000.0
#: A loop: this many identical calls (caller, tool, arguments) within LOOP_WINDOW.
LOOP_MIN_REPEATS = 10
LOOP_WINDOW = "5s"


@dataclass
class Finding:
    name: str
    title: str
    what: str
    start: str
    end: str
    request_ids: list[str]
    count: int


def _ts(value: object) -> str:
    return value.strftime("%H:%M:%S.%f")[:-3] if hasattr(value, "strftime") else str(value)


def _span(frame: pl.DataFrame) -> tuple[str, str]:
    return _ts(frame[f.TIMESTAMP].min()), _ts(frame[f.TIMESTAMP].max())


def load(log_dir: Path) -> pl.DataFrame:
    files = sorted(str(p) for p in log_dir.glob("*.log*"))
    return pl.concat([pl.read_ndjson(p, schema=polars_schema()) for p in files]).sort(f.TIMESTAMP)


def find_incidents(df: pl.DataFrame) -> list[Finding]:
    calls = df.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
    found: list[Finding] = []

    typical = pl.col(f.DURATION_MS).median().over(f.TOOL_NAME)
    slow = calls.filter(
        (pl.col(f.STATUS) == f.SUCCESS)
        & (pl.col(f.DURATION_MS) > pl.max_horizontal(typical * SLOW_FACTOR, pl.lit(SLOW_FLOOR_MS)))
    )
    if slow.height:
        tools = ", ".join(f"`{t}`" for t in slow[f.TOOL_NAME].unique().sort())
        top = slow.sort(f.DURATION_MS, descending=True)
        found.append(
            Finding(
                "slow_tool",
                "Slow tool",
                f"calls to {tools} succeed but take over {SLOW_FACTOR:g}x their median "
                f"(slowest {top[f.DURATION_MS][0] / 1000:.2f} s); the upstream API behind them is slow",
                _ts(slow[f.TIMESTAMP].min()),
                _ts(slow[f.TIMESTAMP].max()),
                top[f.REQUEST_ID].head(3).to_list(),
                slow.height,
            )
        )

    down = df.filter(
        (pl.col(f.EVENT) == f.EV_DOWNSTREAM_CALL)
        & (pl.col(f.SERVICE) == "upstream")
        & (pl.col(f.STATUS) == f.FAILURE)
    )
    if down.height:
        errors = ", ".join(f"`{e}`" for e in down[f.ERROR].unique().sort())
        affected = calls.filter(pl.col(f.REQUEST_ID).is_in(down[f.REQUEST_ID].implode()))
        tools = ", ".join(f"`{t}`" for t in affected[f.TOOL_NAME].unique().sort())
        found.append(
            Finding(
                "upstream_outage",
                "Upstream outage",
                f"every call to the upstream API fails ({errors}); "
                f"{tools} fail for {affected[f.CALLER_ID].n_unique()} callers",
                _ts(down[f.TIMESTAMP].min()),
                _ts(down[f.TIMESTAMP].max()),
                down[f.REQUEST_ID].head(3).to_list(),
                down.height,
            )
        )

    key = [f.CALLER_ID, f.TOOL_NAME, f.ARGUMENTS_HASH]
    burst = (
        calls.sort(f.TIMESTAMP)
        .rolling(f.TIMESTAMP, period=LOOP_WINDOW, group_by=key)
        .agg(pl.len().alias("burst"))
        .group_by(key)
        .agg(pl.col("burst").max())
    )
    repeats = (
        calls.group_by(key)
        .agg(pl.len().alias("n"), pl.col(f.RESULT_HASH).n_unique().alias("results"))
        .join(burst, on=key)
        .filter(pl.col("burst") >= LOOP_MIN_REPEATS)
        .sort("n", descending=True)
        .drop("burst")
    )
    if repeats.height:
        caller, tool, args, n, results = repeats.row(0)
        loop = calls.filter(
            (pl.col(f.CALLER_ID) == caller)
            & (pl.col(f.TOOL_NAME) == tool)
            & (pl.col(f.ARGUMENTS_HASH) == args)
        )
        found.append(
            Finding(
                "agent_loop",
                "Agent loop",
                f"`{caller}` calls `{tool}` with the same arguments {n} times "
                f"and gets {'the same answer every time' if results == 1 else f'{results} answers'}",
                *_span(loop),
                loop[f.REQUEST_ID].head(3).to_list(),
                n,
            )
        )

    def refusals(event: str, reasons: list[str]) -> tuple[pl.DataFrame, int]:
        """Version-2 `event` lines, or version-3 `request_refused` lines for `reasons`, and the requests they are."""
        v3 = (pl.col(f.EVENT) == f.EV_REQUEST_REFUSED) & pl.col(f.REFUSAL_REASON).is_in(reasons)
        lines = df.filter((pl.col(f.EVENT) == event) | v3.fill_null(False))
        return lines, int(lines[f.COUNT].fill_null(1).sum()) if lines.height else 0

    auth, refused = refusals(f.EV_AUTH_FAILED, [f.R_UNAUTHENTICATED])
    if auth.height:
        reasons = ", ".join(f"`{e}`" for e in auth[f.ERROR].drop_nulls().unique().sort())
        statuses = ", ".join(str(s) for s in auth[f.HTTP_STATUS].drop_nulls().unique().sort())
        found.append(
            Finding(
                "auth_failures",
                "Auth failures",
                f"{refused} requests refused with HTTP {statuses} ({reasons}); a client keeps "
                "retrying with a token that no longer works",
                *_span(auth),
                auth[f.REQUEST_ID].head(3).to_list(),
                refused,
            )
        )

    limited, refused = refusals(f.EV_RATE_LIMITED, [f.R_RATE_LIMITED, f.R_SUSPENDED])
    if limited.height:
        callers = (
            limited.group_by(f.CALLER_ID).agg(pl.col(f.COUNT).fill_null(1).sum().alias("len"))
            .sort(["len", f.CALLER_ID], descending=[True, False])
        )
        who = ", ".join(f"`{c}` ({n})" for c, n in callers.iter_rows())
        found.append(
            Finding(
                "rate_limit_storm",
                "Rate-limit storm",
                f'{refused} calls refused with "Rate limit exceeded", by caller: {who}',
                *_span(limited),
                limited[f.REQUEST_ID].head(3).to_list(),
                refused,
            )
        )
    return found


def render_readme(log_dir: Path, planted_path: Path) -> str:
    df = load(log_dir)
    planted = tomllib.loads(planted_path.read_text())
    calls = df.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL)
    day = df[f.TIMESTAMP].min().strftime("%Y-%m-%d")  # type: ignore[union-attr]
    size_kb = sum(p.stat().st_size for p in log_dir.glob("*.log*") if p.is_file()) // 1024
    sessionless = calls.filter(pl.col(f.SESSION_ID).is_null()).height
    lines = [
        "# Sample logs",
        "",
        "Logs written by the real `mcptrace serve` (in front of the demo upstream API) while official-SDK",
        "clients ran a mixed workload and faults were switched on. Regenerate everything with:",
        "",
        "    python sample_logs/generate.py",
        "",
        "This file is generated from the logs by that command; do not edit it by hand.",
        "",
        f"- `incidents/`: {df.height} log lines, {calls.height} tool calls, {size_kb} KB, "
        f"{_ts(df[f.TIMESTAMP].min())}–{_ts(df[f.TIMESTAMP].max())} UTC on {day}",
        f"- callers: {', '.join(f'`{c}`' for c in calls[f.CALLER_ID].drop_nulls().unique().sort())}",
        f"- {calls.height - sessionless} calls came over the handshake era (with a session id), "
        f"{sessionless} over the sessionless 2026-07-28 wire",
        "- `planted.toml`: what the generator switched on, with wall-clock windows (ground truth for tests)",
        "",
        "## Incidents",
        "",
        "Times are UTC. Request ids are the first (or worst) few that show the incident; look any of them",
        "up in a notebook (`mcptrace.notebook.waterfall`) to see its whole call chain.",
        "",
        "| incident | window (UTC) | lines | what the logs show | request ids |",
        "|---|---|---|---|---|",
    ]
    findings = find_incidents(df)
    for item in findings:
        ids = "<br>".join(f"`{r}`" for r in item.request_ids)
        lines.append(f"| {item.title} | {item.start}–{item.end} | {item.count} | {item.what} | {ids} |")
    found = {item.name for item in findings}
    lines += ["", "## Planted versus found", ""]
    for name, window in planted.items():
        mark = "found" if name in found else "NOT FOUND in the logs"
        on = f"{window['start'][11:23]}–{window['end'][11:23]}"
        lines.append(f"- `{name}`: switched on {on}, {mark}")
    lines += [
        "",
        "Background noise, not an incident: a few `get_config` calls ask for a key that does not exist",
        "and get a tool error.",
        "",
        "## What `mcptrace incidents sample_logs/incidents` says",
        "",
        "The table above is found by this file's own simple rules, as a check; the product's detector",
        "(`mcptrace.analysis.incidents`) finds the same five, most severe first:",
        "",
        "| kind | severity | subject | window (UTC) | summary |",
        "|---|---|---|---|---|",
    ]
    from mcptrace.analysis import incidents

    for row in incidents(df.lazy()).collect().iter_rows(named=True):
        window = f"{_ts(row['start'])}–{_ts(row['end'])}"
        lines.append(f"| `{row['kind']}` | {row['severity']} | `{row['subject']}` | {window} | {row['summary']} |")
    lines.append("")
    return "\n".join(lines)
