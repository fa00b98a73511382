"""`mcptrace chain REQ_ID [PATH...]`: the whole story of one request.

Kept free of polars and pyarrow: the lookup is a byte search over the raw logs
(or a read of the index when one is fresh), so the command answers in about
the time it takes Python to start.
"""

from __future__ import annotations

import argparse
import sys
import time
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mcptrace.logs._lookup import lookup

    if args.by == "session" and args.jsonrpc_id is None:
        raise NotFound("--by session needs --jsonrpc-id (JSON-RPC ids restart in every session)")
    key = {"request": f.REQUEST_ID, "trace": f.TRACE_ID, "session": f.SESSION_ID}[args.by]
    started = time.monotonic()
    result = lookup(
        args.paths or None, key=key, value=args.request_id, use_index=not args.no_index, replicas=args.replica
    )
    if result.bytes_total:
        print(f"mcptrace: {result.read_message()} in {time.monotonic() - started:.2f}s", file=sys.stderr)
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
        from mcptrace.analysis._report import format_chain

        print(format_chain(records))
    return 0


def _keep(record: dict[str, Any], args: argparse.Namespace) -> bool:
    from mcptrace.logs._search import record_time

    if args.since is not None and record_time(record) < args.since:
        return False
    if args.until is not None and record_time(record) >= args.until:
        return False
    if args.tool and record.get(f.TOOL_NAME) not in args.tool:
        return False
    return not (args.caller and record.get(f.CALLER_ID) not in args.caller)
