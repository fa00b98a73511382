"""`mcptrace token add|revoke|list`: manage the bearer-token store of `mcptrace serve --tokens`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="add, revoke and list bearer tokens")
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add", help="mint a token for a caller; prints it (last line), stores only its hash"
    )
    add.add_argument("caller", help="caller id recorded in every log line of its requests")
    add.add_argument("--tenant", required=True, help="tenant whose data the caller may read")
    add.add_argument(
        "--tool",
        action="append",
        dest="tools",
        metavar="NAME",
        help="allow only this tool (repeatable; default: every tool)",
    )
    add.add_argument("--ttl", type=float, metavar="SECONDS", help="expire the token after this many seconds")
    add.set_defaults(func=_add)

    revoke = actions.add_parser(
        "revoke", help="revoke every token of a caller (running servers notice at once)"
    )
    revoke.add_argument("caller")
    revoke.add_argument("--redis-url", help="also publish the revocation to replicas sharing this Redis")
    revoke.set_defaults(func=_revoke)

    listing = actions.add_parser("list", help="list callers, tenants, tools and expiry (never tokens)")
    listing.set_defaults(func=_list)

    for parser in (add, revoke, listing):
        parser.add_argument("--store", type=Path, required=True, help="token store file")


def _add(args: argparse.Namespace) -> int:
    from mcptrace.guards._tokens import TokenStore

    token = TokenStore(args.store).add(
        args.caller, tenant=args.tenant, tools=args.tools, ttl_seconds=args.ttl
    )
    print(f"token for {args.caller} (tenant {args.tenant}); shown once, keep it secret:")
    print(token)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    import sys

    from mcptrace.guards._tokens import TokenStore

    removed = TokenStore(args.store).revoke(args.caller)
    if args.redis_url and removed:
        import anyio

        from mcptrace.guards._backend import RedisBackend

        async def publish() -> None:
            backend = RedisBackend(args.redis_url)
            try:
                await backend.revoke(e.identity().key for e in removed)
            finally:
                await backend.aclose()

        anyio.run(publish)
    if not removed:
        print(f"mcptrace: no tokens for {args.caller}", file=sys.stderr)
        return 1
    print(f"revoked {len(removed)} token(s) of {args.caller}")
    return 0


def _list(args: argparse.Namespace) -> int:
    import time

    from mcptrace.guards._tokens import TokenStore

    print(f"{'CALLER':<24} {'TENANT':<16} {'KEY':<20} {'TOOLS':<30} EXPIRES")
    for entry in TokenStore(args.store).entries():
        tools = ",".join(entry.tools) if entry.tools is not None else "*"
        expires = (
            "never"
            if entry.expires_at is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.expires_at))
        )
        print(f"{entry.caller_id:<24} {entry.tenant:<16} {entry.identity().key:<20} {tools:<30} {expires}")
    return 0
