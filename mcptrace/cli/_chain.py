"""`mcptrace chain REQ_ID [PATH...]`: the whole story of one request.

Kept free of polars and pyarrow: the lookup is a byte search over the raw logs
(or a read of the index when one is fresh), so the command answers in about
the time it takes Python to start.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from mcptrace import _fields as f
from mcptrace.cli._options import NotFound, add_common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("chain", help="every line of one request, in time order, with its downstream calls")
    p.add_argument(
        "request_id", metavar="ID", help="an mcp_request_id (or a trace id / session id with the flags)"
    )
    add_common(p)
    p.add_argument(
        "--by",
        choices=("request", "trace", "session"),
        default="request",
        help="what ID is: an mcp_request_id (default), a trace id, or a session id (with --jsonrpc-id)",
    )
    p.add_argument("--jsonrpc-id", help="with --by session: the JSON-RPC id within that session")
    p.add_argument("--no-index", action="store_true", help="search the raw logs even when an index is fresh")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcptrace.analysis._lookup import lookup

    if args.by == "session" and args.jsonrpc_id is None:
        raise NotFound("--by session needs --jsonrpc-id (JSON-RPC ids restart in every session)")
    key = {"request": f.REQUEST_ID, "trace": f.TRACE_ID, "session": f.SESSION_ID}[args.by]
    result = lookup(args.paths or None, key=key, value=args.request_id, use_index=not args.no_index)
    records = result.records
    if args.by == "session":
        records = [r for r in records if str(r.get(f.JSONRPC_ID)) == str(args.jsonrpc_id)]
    records = [r for r in records if _keep(r, args)]
    for problem in result.corrupt:
        print(f"mcptrace: warning: {problem}", file=sys.stderr)
    if not records:
        raise NotFound(result.not_found_message(args.request_id))
    if args.format == "json":
        from mcptrace.cli._render import dump_json

        dump_json(records)
    elif args.format == "csv":
        from mcptrace.cli._render import dump_csv

        columns = list(dict.fromkeys(k for r in records for k in r))
        dump_csv(records, columns)
    else:
        print_tree(records)
    return 0


def _keep(record: dict[str, Any], args: argparse.Namespace) -> bool:
    from mcptrace.analysis._search import record_time

    if args.since is not None and record_time(record) < args.since:
        return False
    if args.until is not None and record_time(record) >= args.until:
        return False
    if args.tool and record.get(f.TOOL_NAME) not in args.tool:
        return False
    return not (args.caller and record.get(f.CALLER_ID) not in args.caller)


def _ms(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "-"


def print_tree(records: list[dict[str, Any]]) -> None:
    """One block per request: a header, then each line with its offset and nested downstream calls."""
    from mcptrace.analysis._search import record_time

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
        print(f"{rid}  {what or '-'}  {status.upper()}  total {_ms(total)}")
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
            print("  " + "  ".join(f"{k}={v}" for k, v in meta))
        for r in lines:
            offset = (record_time(r) - start).total_seconds() * 1000
            detail = _detail(r)
            stamp = str(r.get(f.TIMESTAMP, ""))
            print(f"  +{offset:8.1f} ms  {stamp}  {r.get(f.EVENT)}{('  ' + detail) if detail else ''}")
            if r.get(f.EVENT) == f.EV_TOOL_CALL:
                calls = r.get(f.DOWNSTREAM_CALLS) or []
                for i, call in enumerate(calls):
                    branch = "└─" if i == len(calls) - 1 else "├─"
                    err = f"  {call.get(f.ERROR)}" if call.get(f.ERROR) else ""
                    print(
                        f"  {' ' * 14}{branch} {call.get(f.SERVICE)}  query {call.get(f.QUERY_HASH) or '-'}  "
                        f"{_ms(call.get(f.DURATION_MS))}  {call.get(f.STATUS)}{err}"
                    )
        print()


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
