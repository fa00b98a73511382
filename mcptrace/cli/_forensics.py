"""`mcptrace stats|errors|loops|sessions|runs|index`: questions over the logs, answered with polars."""

from __future__ import annotations

import argparse
from typing import Any

from mcptrace.cli._options import (
    Progress,
    UsageError,
    add_common,
    at_least,
    load_frame,
    parse_duration,
    parse_window,
    report_problems,
)
from mcptrace.cli._render import add_format, dump_json, emit

ERROR_COLUMNS = ["tool_name", "status", "error", "mcp_request_id", "downstream_calls"]
LOOP_COLUMNS = [
    "caller_id",
    "session_id",
    "tool_name",
    "arguments_hash",
    "result_hash",
    "input_token_count",
    "mcp_request_id",
    "status",
]
RUN_INPUT_COLUMNS = ["client_name", "client_version", "trace_id", "parent_span_id", "baggage"]
SESSION_INPUT_COLUMNS = [
    "schema_version",
    "session_id",
    "caller_id",
    "mcp_request_id",
    "status",
    "tool_name",
]
TIMELINE_INPUT_COLUMNS = [*SESSION_INPUT_COLUMNS, "message", "service", "refusal_reason", "count"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="calls, errors, error rate and p50/p95/p99 latency per tool")
    add_common(p)
    p.add_argument(
        "--by",
        choices=("tool", "method", "caller", "service"),
        default="tool",
        help="group by tool (default), JSON-RPC method, caller or downstream service",
    )
    p.add_argument(
        "--every", type=parse_window, metavar="WINDOW",
        help="one row per time window and group; a duration with its unit (30s, 5m, 1h)",
    )
    p.set_defaults(func=run_stats)

    p = sub.add_parser("errors", help="the most frequent errors, and own versus downstream errors per tool")
    add_common(p)
    p.add_argument("--limit", type=int, default=20, help="rows of most frequent errors (default 20)")
    p.set_defaults(func=run_errors)

    p = sub.add_parser(
        "loops",
        help="agent loops: repeats, cycles, near-duplicate retries and call-rate spikes, told apart "
        "from retry storms and polls",
    )
    add_common(p)
    p.add_argument(
        "--threshold",
        type=at_least(2),
        default=5,
        help="fewest calls of a loop: identical calls in a row, or a cycle's calls (default 5)",
    )
    p.add_argument(
        "--window",
        type=parse_duration,
        default="10m",
        help="calls further apart than this never belong to one loop; with a unit (default 10m)",
    )
    p.add_argument(
        "--per",
        choices=("run", "session", "caller"),
        default="run",
        help="whose calls are compared: a run (default: session, baggage run id, trace, or idle gap), "
        "a caller in a session, or a caller across its runs",
    )
    p.add_argument(
        "--gap", type=parse_duration, default="5m",
        help="with --per run: inactivity that ends a run; with a unit (default 5m)",
    )
    p.add_argument(
        "--polls", action="store_true", help="also list steady probes and polls (kind poll), never loops"
    )
    p.set_defaults(func=run_loops)

    p = sub.add_parser("sessions", help="sessions (start, end, calls, errors) and the incident timeline")
    add_common(p)
    p.add_argument("--timeline", action="store_true", help="print the incident timeline instead")
    p.add_argument(
        "--every", type=parse_window, default="1m", metavar="WINDOW",
        help="timeline window; a duration with its unit (30s, 5m, 1h; default 1m)",
    )
    p.set_defaults(func=run_sessions)

    p = sub.add_parser(
        "runs", help="agent runs, with or without sessions (session, baggage, trace or idle gap)"
    )
    add_common(p)
    p.add_argument(
        "--gap", type=parse_duration, default="5m",
        help="inactivity that ends a sessionless run; with a unit (default 5m)",
    )
    p.add_argument(
        "--loops", action="store_true", help="print the loops found per run and per caller instead"
    )
    p.set_defaults(func=run_runs)

    p = sub.add_parser("index", help="write a Parquet index beside the logs so later queries skip the JSON")
    p.add_argument(
        "paths", nargs="*", metavar="PATH",
        help="log files, globs or directories (default: where `mcptrace serve` writes)",
    )
    p.add_argument(
        "--dest", metavar="URL",
        help="ship the index to a fleet dataset instead: a folder or s3://bucket/prefix (AWS_* variables)",
    )
    p.add_argument("--replica", help="with --dest: this replica's name in the dataset (default: the host name)")
    add_format(p)
    p.set_defaults(func=run_index)


def _rows(frame: Any) -> list[dict[str, Any]]:
    return frame.collect().to_dicts()  # type: ignore[no-any-return]


def _with_replicas(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """The columns, and the replica column the rows have when they come from a fleet dataset."""
    extra = [c for c in ("replicas", "example_replica") if rows and c in rows[0]]
    return [*columns, *extra]


def run_stats(args: argparse.Namespace) -> int:
    if _stats_from_summary(args) or _stats_streamed(args):
        return 0
    from mcptrace import _fields as f
    from mcptrace.analysis import method_stats, service_stats, tool_stats, top_callers
    from mcptrace.analysis._done import CLOSING_EVENTS
    from mcptrace.logs._refusals import REFUSAL_COLUMNS, REFUSAL_EVENTS
    from mcptrace.logs._toolsummary import STATS_COLUMNS

    by_columns = {
        "tool": [f.TOOL_NAME, f.STATUS, f.DURATION_MS, *REFUSAL_COLUMNS],
        "method": [f.METHOD, f.STATUS, f.DURATION_MS, f.SCHEMA_VERSION, *REFUSAL_COLUMNS],
        "caller": [f.CALLER_ID, f.TOOL_NAME, f.STATUS, *REFUSAL_COLUMNS],
        "service": [f.DOWNSTREAM_CALLS, f.TOOL_NAME, f.REQUEST_ID, f.CALLER_ID, f.SESSION_ID],
    }
    events = [*(CLOSING_EVENTS if args.by == "method" else [f.EV_TOOL_CALL]), *REFUSAL_EVENTS]
    loaded = load_frame(args, columns=by_columns[args.by], events=events)
    every = args.every
    if args.by == "tool":
        rows = _rows(tool_stats(loaded.frame, every=every))
        columns = STATS_COLUMNS
    elif args.by == "method":
        rows = _rows(method_stats(loaded.frame, every=every))
        columns = [f.METHOD, *STATS_COLUMNS[1:]]
    elif args.by == "caller":
        rows = _rows(top_callers(loaded.frame, limit=1_000_000))
        columns = [f.CALLER_ID, "calls", "errors", "error_rate", "refused", "tools"]
        every = None
    else:
        rows = _rows(service_stats(loaded.frame))
        columns = [f.SERVICE, *STATS_COLUMNS[1:]]
        every = None
    if every is not None:
        columns = ["window", *columns]
    emit(rows, columns, args.format)
    return 0


def _stats_from_summary(args: argparse.Namespace) -> bool:
    """Per-tool stats over whole logs straight from a fresh index's summary (no polars); False otherwise."""
    whole = args.every is None and args.since is None and args.until is None and not args.caller
    if args.by != "tool" or not whole or args.no_index:
        return False
    from mcptrace.logs._toolsummary import STATS_COLUMNS, indexed_tool_stats

    try:
        found = indexed_tool_stats(args.paths or None, tools=args.tool)
    except Exception:  # a damaged summary: the Parquet index or the JSON answers, and says why
        return False
    if found is None:
        return False
    rows, report = found
    report_problems(report)
    emit(rows, STATS_COLUMNS, args.format)
    return True


def _stats_streamed(args: argparse.Namespace) -> bool:
    """Per-tool stats from the JSON logs summed block by block (`--no-index`, no `--every`); False otherwise."""
    if args.by != "tool" or args.every is not None or not args.no_index:
        return False
    from mcptrace.cli._options import row_filter
    from mcptrace.logs._toolpartials import streamed_tool_stats
    from mcptrace.logs._toolsummary import STATS_COLUMNS

    progress = Progress()
    try:
        rows, report = streamed_tool_stats(args.paths or None, where=row_filter(args), progress=progress)
    finally:
        progress.done()
    report_problems(report)
    emit(rows, STATS_COLUMNS, args.format)
    return True


def run_errors(args: argparse.Namespace) -> int:
    from mcptrace import _fields as f
    from mcptrace.analysis import error_messages, error_sources, refused_requests
    from mcptrace.logs._refusals import REFUSAL_COLUMNS, REFUSAL_EVENTS

    columns = [*ERROR_COLUMNS, f.CALLER_ID, *REFUSAL_COLUMNS]
    loaded = load_frame(args, columns=columns, events=[f.EV_TOOL_CALL, *REFUSAL_EVENTS])
    messages = _rows(error_messages(loaded.frame, limit=args.limit))
    sources = _rows(error_sources(loaded.frame))
    refused = _rows(refused_requests(loaded.frame, limit=args.limit))
    if args.format == "json":
        dump_json({"by_tool": sources, "top_errors": messages, "refused": refused})
        return 0
    msg_cols = _with_replicas(messages, [f.TOOL_NAME, "count", "first", "last", "example_request_id", f.ERROR])
    src_cols = [f.TOOL_NAME, "calls", "errors", "downstream_errors", "own_errors", "refused"]
    ref_cols = [f.TOOL_NAME, f.REFUSAL_REASON, "count", "first", "last", "example_request_id", "callers"]
    if args.format == "csv":
        # One flat table: `table` names the section each row belongs to; other sections' columns are empty.
        flat = [{"table": "by_tool", **r} for r in sources] + [{"table": "top_errors", **r} for r in messages]
        flat += [{"table": "refused", **r} for r in refused]
        emit(flat, ["table", *src_cols, *msg_cols[1:], f.REFUSAL_REASON, "callers"], "csv")
        return 0
    print("Errors per tool (own versus downstream), and requests refused before they ran:")
    emit(sources, src_cols, "table")
    print("\nMost frequent errors:")
    emit(messages, msg_cols, "table")
    if refused:
        print("\nRefused requests (by tool and reason):")
        emit(refused, ref_cols, "table")
    return 0


def run_index(args: argparse.Namespace) -> int:
    if args.dest is not None:
        return _run_ship(args)
    if args.replica is not None:
        raise UsageError("--replica names a replica in a fleet dataset: give --dest too")
    from mcptrace.analysis import build_index

    progress = Progress("indexing")
    try:
        report = build_index(args.paths or None, progress=progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        progress.done()
    row = {
        "directory": str(report.directory),
        "rows": report.rows,
        "indexed": report.indexed,
        "reused": report.reused,
        "corrupt_lines": report.corrupt_count,
        "unreadable": report.unreadable,
    }
    if args.format == "json":
        dump_json(row)
    elif args.format == "csv":
        emit([row], list(row), "csv")
    else:
        print(
            f"index {report.directory}: {report.rows} rows; indexed {len(report.indexed)} file(s), "
            f"reused {len(report.reused)}"
        )
    report_problems(report)
    return 0


def _run_ship(args: argparse.Namespace) -> int:
    from mcptrace.logs import ship

    try:
        report = ship(args.paths or None, args.dest, replica=args.replica)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    row = {
        "dest": report.dest,
        "replica": report.replica,
        "rows": report.rows,
        "bytes": report.bytes_shipped,
        "shipped": report.shipped,
        "unchanged": report.unchanged,
        "corrupt_lines": report.load.corrupt_count,
    }
    if args.format == "json":
        dump_json(row)
    elif args.format == "csv":
        emit([row], list(row), "csv")
    else:
        print(
            f"shipped {report.rows} rows ({report.bytes_shipped / 1e6:.1f} MB of logs) to {report.dest} as replica "
            f"{report.replica}: {len(report.shipped)} shipment(s), {len(report.unchanged)} file(s) unchanged"
        )
    report_problems(report)
    return 0


def run_loops(args: argparse.Namespace) -> int:
    from mcptrace import _fields as f
    from mcptrace.analysis import assign_runs, loops
    from mcptrace.analysis._loops import EPISODE_COLUMNS

    loaded = load_frame(args, columns=LOOP_COLUMNS + RUN_INPUT_COLUMNS, events=[f.EV_TOOL_CALL])
    frame = loaded.frame
    by: tuple[str, ...]
    if args.per == "run":
        frame, by = assign_runs(frame, gap=args.gap), ("run_id",)
    elif args.per == "caller":
        by = (f.CALLER_ID,)
    else:
        by = (f.CALLER_ID, f.SESSION_ID)
    found = loops(frame, by=by, threshold=args.threshold, window=args.window, include_polls=args.polls)
    rows = _rows(found)
    columns = [c for c in EPISODE_COLUMNS if c != "tools"]
    emit(rows, columns, args.format)
    return 0


def run_sessions(args: argparse.Namespace) -> int:
    from mcptrace.analysis import sessions, timeline
    from mcptrace.analysis._sessions import SESSION_COLUMNS, TIMELINE_COLUMNS

    if args.timeline:
        loaded = load_frame(args, columns=TIMELINE_INPUT_COLUMNS)
        emit(_rows(timeline(loaded.frame, every=args.every)), TIMELINE_COLUMNS, args.format)
        return 0
    import polars as pl

    from mcptrace import _fields as f

    loaded = load_frame(args, columns=SESSION_INPUT_COLUMNS, rows=pl.col(f.SESSION_ID).is_not_null())
    rows = _rows(sessions(loaded.frame))
    emit(rows, _with_replicas(rows, SESSION_COLUMNS), args.format)
    return 0


def run_runs(args: argparse.Namespace) -> int:
    from mcptrace import _fields as f
    from mcptrace.analysis import assign_runs, loops, runs
    from mcptrace.analysis._loops import EPISODE_COLUMNS
    from mcptrace.analysis._runs import RUN_COLUMNS

    loaded = load_frame(args, columns=LOOP_COLUMNS + RUN_INPUT_COLUMNS, events=[f.EV_TOOL_CALL])
    if not args.loops:
        rows = _rows(runs(loaded.frame, gap=args.gap))
        emit(rows, _with_replicas(rows, RUN_COLUMNS), args.format)
        return 0
    import polars as pl

    per_run = loops(assign_runs(loaded.frame, gap=args.gap), by=("run_id",)).with_columns(
        pl.lit("run").alias("per")
    )
    per_caller = loops(loaded.frame, by=(f.CALLER_ID,)).with_columns(pl.lit("caller").alias("per"))
    rows = _rows(pl.concat([per_run, per_caller], how="vertical"))
    emit(rows, ["per", *(c for c in EPISODE_COLUMNS if c != "tools")], args.format)
    return 0
