"""`mcptrace token add|revoke|list`: manage the bearer-token store of `mcptrace serve --tokens`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcptrace.cli._options import parse_seconds
from mcptrace.cli._render import add_format


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
    add.add_argument(
        "--ttl", type=parse_seconds, metavar="DURATION",
        help="expire the token after this long (30s, 12h, 90d; a bare number is seconds)",
    )
    add.set_defaults(func=_add)

    revoke = actions.add_parser(
        "revoke",
        help="revoke every token of a caller: refused from the next request on, once this returns 0",
    )
    revoke.add_argument("caller", help="caller id whose tokens are revoked")
    revoke.add_argument(
        "--redis-url",
        help="also revoke on every replica sharing this Redis; returns once each live replica confirmed",
    )
    revoke.add_argument(
        "--confirm-timeout", type=parse_seconds, default=2.0, metavar="DURATION",
        help="how long to wait for the replicas' confirmations (0.5s, 2s, 1m; a bare number is seconds; default 2s)",
    )
    revoke.set_defaults(func=_revoke)

    listing = actions.add_parser("list", help="list callers, tenants, tools and expiry (never tokens)")
    add_format(listing)
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
    """All or nothing: the store changes only once Redis (when given) holds the revocation.

    Exit 0: revoked here and, with `--redis-url`, confirmed by every live replica.
    Exit 1, with one line saying what failed: nothing to revoke, the store or Redis
    could not be reached (then nothing changed), or a replica did not confirm in
    time (then the revocation stands, and that replica applies it once it is back).
    """
    import sys

    import anyio

    from mcptrace._errors import MCPTraceError
    from mcptrace.guards._revocations import Confirmation, publish_revocation
    from mcptrace.guards._tokens import TokenEntry, TokenStore

    confirmation: list[Confirmation] = []

    def publish(removed: list[TokenEntry]) -> None:
        if not args.redis_url:
            return
        keys = [e.identity().key for e in removed]
        try:
            confirmation.append(anyio.run(lambda: publish_revocation(
                args.redis_url, keys, confirm_timeout=args.confirm_timeout)))
        except Exception as exc:
            raise _Unreachable(f"Redis at {args.redis_url} failed ({_reason(exc)})") from None

    try:
        removed = TokenStore(args.store).revoke(args.caller, before_commit=publish)
    except (_Unreachable, MCPTraceError) as exc:
        print(f"mcptrace: token revoke failed: {exc}; nothing was changed", file=sys.stderr)
        return 1
    if not removed:
        print(f"mcptrace: no tokens for {args.caller}; nothing was changed", file=sys.stderr)
        return 1
    if confirmation and confirmation[0].missing:
        missing = ", ".join(sorted(confirmation[0].missing))
        print(f"mcptrace: revoked {len(removed)} token(s) of {args.caller}, but replica(s) {missing} did not "
              f"confirm within {args.confirm_timeout:g} s; they refuse it once reconnected to Redis", file=sys.stderr)
        return 1
    where = f" (confirmed by {len(confirmation[0].confirmed)} replica(s))" if confirmation else ""
    print(f"revoked {len(removed)} token(s) of {args.caller}{where}")
    return 0


class _Unreachable(Exception):
    pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _list(args: argparse.Namespace) -> int:
    import time

    from mcptrace.cli._options import UsageError
    from mcptrace.cli._render import emit
    from mcptrace.guards._tokens import TokenStore

    if not args.store.exists():
        raise UsageError(f"token store {args.store} does not exist (`mcptrace token add` creates it)")
    rows = [
        {
            "caller_id": entry.caller_id,
            "tenant": entry.tenant,
            "key": entry.identity().key,
            "tools": list(entry.tools) if entry.tools is not None else None,
            "expires_at": None if entry.expires_at is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.expires_at)),
        }
        for entry in TokenStore(args.store).entries()
    ]
    if args.format != "table":
        emit(rows, list(_LIST_COLUMNS), args.format)
        return 0
    print(f"{'CALLER':<24} {'TENANT':<16} {'KEY':<20} {'TOOLS':<30} EXPIRES")
    for row in rows:
        tools = ",".join(row["tools"]) if row["tools"] is not None else "*"
        print(f"{row['caller_id']:<24} {row['tenant']:<16} {row['key']:<20} {tools:<30} {row['expires_at'] or 'never'}")
    return 0


_LIST_COLUMNS = ("caller_id", "tenant", "key", "tools", "expires_at")
