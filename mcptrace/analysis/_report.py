"""Readable text: the chain of a request as a tree, and the short forensics report the demo prints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mcptrace import _fields as f
from mcptrace.logs._lookup import lookup
from mcptrace.logs._search import record_time
from mcptrace.logs._sources import Paths


def report_text(paths: Paths = None, *, top: int = 10) -> str:
    """The incidents, most severe first; p99 and error rate per tool; loops apart from retry storms; and the
    chain of one failed request (a downstream failure first)."""
    import polars as pl

    from mcptrace.analysis._incidents import incidents
    from mcptrace.analysis._loops import LOOP_KINDS, loops
    from mcptrace.analysis._stats import tool_stats
    from mcptrace.logs._load import load

    loaded = load(paths)
    frame = loaded.frame.collect().lazy()
    lines = ["mcptrace forensics report", "=" * 25]
    summary = loaded.report.summary()
    lines.append(
        f"read {len(loaded.report.files)} file(s), {loaded.report.lines} line(s)"
        + (f"; {summary}" if summary else "")
    )
    found = incidents(frame).collect()
    lines += ["", f"Incidents: {found.height}"]
    for row in found.head(top).iter_rows(named=True):
        lines.append(f"  {row['severity']:<6} {row['kind']:<18} {row['start']:%H:%M:%S}  {row['summary']}")
    stats = tool_stats(frame).collect()
    lines += ["", "Per tool: calls, error rate, refused requests, p99"]
    busiest = stats.sort("calls", "refused", f.TOOL_NAME, descending=[True, True, False])
    for row in busiest.head(top).iter_rows(named=True):
        p99 = f"{row['p99_ms']:.1f} ms" if row["p99_ms"] is not None else "-"
        rate = f"{row['error_rate'] * 100:5.1f}%" if row["error_rate"] is not None else "    -"
        lines.append(
            f"  {str(row[f.TOOL_NAME]):<24} {row['calls']:>7}  {rate} errors  {row['refused']:>5} refused  p99 {p99}"
        )
    episodes = loops(frame).collect()
    groups = (("Agent loops", LOOP_KINDS), ("Retry storms and call-rate spikes", ("retry_storm", "rate_spike")))
    for title, kinds in groups:
        part = episodes.filter(pl.col("kind").is_in(kinds))
        lines += ["", f"{title}: {part.height}"]
        for row in part.head(top).iter_rows(named=True):
            lines.append(
                f"  {row['kind']:<14} {row[f.CALLER_ID] or '-'} {row[f.TOOL_NAME]} x{row['count']} "
                f"({row['rate']:.0f}/min, {row['severity']}) from {row['start']:%H:%M:%S}"
            )
    # The most telling failure: the latest whose dependency failed under it, else the latest one.
    failed = (
        frame.filter((pl.col(f.EVENT) == f.EV_TOOL_CALL) & (pl.col(f.STATUS) == f.FAILURE))
        .with_columns(
            pl.col(f.DOWNSTREAM_CALLS)
            .list.eval(pl.element().struct.field(f.STATUS) == f.FAILURE)
            .list.any()
            .fill_null(False)
            .alias("_downstream_failed")
        )
        .sort("_downstream_failed", f.TIMESTAMP)
        .select(f.REQUEST_ID, "_downstream_failed")
        .collect()
    )
    if failed.height:
        rid = failed.get_column(f.REQUEST_ID).to_list()[-1]
        why = "a dependency failed under it" if failed.get_column("_downstream_failed")[-1] else "the latest"
        lines += ["", f"Chain of a failed request ({why}; {failed.height} failed in all):"]
        lines.append(format_chain(lookup(paths, value=rid).records).rstrip())
        lines.append(f"  (mcptrace chain {rid} for the whole story)")
    else:
        lines += ["", "No failed tool calls."]
    return "\n".join(lines) + "\n"


def _ms(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "-"


def format_chain(records: list[dict[str, Any]]) -> str:
    """One block per request: a header, then each line with its offset and nested downstream calls."""
    out: list[str] = []
    by_request: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_request.setdefault(str(r.get(f.REQUEST_ID)), []).append(r)
    for rid, lines in by_request.items():
        head = lines[0]
        final = next(
            (r for r in reversed(lines) if r.get(f.EVENT) in (f.EV_RESPONSE_SENT, f.EV_TOOL_CALL)), None
        )
        start: datetime = record_time(head)
        status = (final or {}).get(f.STATUS) or "?"
        total = (final or {}).get(f.DURATION_MS)
        what = " ".join(str(x) for x in (head.get(f.METHOD), head.get(f.TOOL_NAME)) if x)
        out.append(f"{rid}  {what or '-'}  {status.upper()}  total {_ms(total)}")
        meta = [
            (k, head.get(k))
            for k in (
                f.CALLER_ID,
                f.SESSION_ID,
                f.JSONRPC_ID,
                f.TRACE_ID,
                f.TENANT,
                f.CLIENT_NAME,
                f.PROTOCOL_VERSION,
            )
            if head.get(k) is not None
        ]
        if meta:
            out.append("  " + "  ".join(f"{k}={v}" for k, v in meta))
        for r in lines:
            offset = (record_time(r) - start).total_seconds() * 1000
            detail = _detail(r)
            stamp = str(r.get(f.TIMESTAMP, ""))
            if r.get(f.REPLICA) is not None:  # a fleet dataset: which replica wrote the line
                stamp += f"  {r[f.REPLICA]}"
            out.append(f"  +{offset:8.1f} ms  {stamp}  {r.get(f.EVENT)}{('  ' + detail) if detail else ''}")
            if r.get(f.EVENT) == f.EV_TOOL_CALL:
                calls = r.get(f.DOWNSTREAM_CALLS) or []
                for i, call in enumerate(calls):
                    branch = "└─" if i == len(calls) - 1 else "├─"
                    err = f"  {call.get(f.ERROR)}" if call.get(f.ERROR) else ""
                    out.append(
                        f"  {' ' * 14}{branch} {call.get(f.SERVICE)}  query {call.get(f.QUERY_HASH) or '-'}  "
                        f"{_ms(call.get(f.DURATION_MS))}  {call.get(f.STATUS)}{err}"
                    )
        out.append("")
    return "\n".join(out)


def _detail(r: dict[str, Any]) -> str:
    event = r.get(f.EVENT)
    parts: list[str] = []
    if event == f.EV_DOWNSTREAM_CALL:
        parts.append(f"{r.get(f.SERVICE)} {_ms(r.get(f.DURATION_MS))} {r.get(f.STATUS)}")
    elif event in (f.EV_TOOL_CALL, f.EV_RESPONSE_SENT):
        parts.append(f"{_ms(r.get(f.DURATION_MS))} {r.get(f.STATUS)}")
        if event == f.EV_TOOL_CALL and r.get(f.ARGUMENTS_HASH):
            parts.append(f"args {r.get(f.ARGUMENTS_HASH)}")
    elif r.get(f.STATUS):
        parts.append(str(r.get(f.STATUS)))
    if r.get(f.ERROR):
        parts.append(f"error: {r.get(f.ERROR)}")
    if r.get(f.ERROR_CODE) is not None:
        parts.append(f"code {r.get(f.ERROR_CODE)}")
    if r.get(f.MESSAGE) and event not in (f.EV_TOOL_CALL,):
        parts.append(str(r.get(f.MESSAGE)))
    return "  ".join(parts)
