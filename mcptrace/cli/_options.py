"""Options shared by commands: the analysis commands' paths, time range, tool, caller and output format;
the servers' binding, log and guard options."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mcptrace._errors import MCPTraceError
from mcptrace.cli._render import add_format

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


_BARE_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


def parse_duration(text: str) -> timedelta:
    """`90s`, `5m`, `1.5h`, `2d`: a number with its unit (a bare number is refused: 5 what?)."""
    m = _RELATIVE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (give a unit: e.g. 30s, 5m, 2h, 1d)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_window(text: str) -> str:
    """A time-bucket width (`30s`, `5m`, `1h`), returned as the polars duration string the analysis takes."""
    delta = parse_duration(text)
    ms = round(delta.total_seconds() * 1000)
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (a window must be longer than 0)")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def parse_seconds(text: str) -> float:
    """A duration in seconds for timeouts and intervals: `30s`, `5m`, `1h`, or a bare number of seconds."""
    if _BARE_NUMBER.match(text.strip()):
        return float(text)
    return parse_duration(text).total_seconds()


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (UTC when it has no offset) or a duration ago (`15m` = 15 minutes ago)."""
    if _RELATIVE.match(text.strip()):
        return datetime.now(UTC) - parse_duration(text)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use ISO 8601 like 2026-11-25T14:30:00Z, or 15m for 15 minutes ago)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_common(parser: argparse.ArgumentParser, *, paths: bool = True) -> None:
    if paths:
        parser.add_argument(
            "paths",
            nargs="*",
            metavar="PATH",
            help="log files, globs, directories, .gz/.zst or - for stdin "
            "(default: where `mcptrace serve` writes)",
        )
    parser.add_argument(
        "--since", type=parse_time, help="only lines at or after this time (ISO 8601, or 15m ago)"
    )
    parser.add_argument("--until", type=parse_time, help="only lines before this time")
    parser.add_argument("--tool", action="append", help="only this tool (repeatable)")
    parser.add_argument("--caller", action="append", help="only this caller id (repeatable)")
    parser.add_argument(
        "--replica", action="append", help="only this replica of a fleet dataset (an s3:// URL or folder; repeatable)"
    )
    add_format(parser)
    parser.add_argument(
        "--no-index", action="store_true", help="read the raw logs even when an index is fresh"
    )


def row_filter(args: argparse.Namespace, also: Any = None) -> Any:
    """The polars predicate for --since/--until/--tool/--caller (and `also`, a command's own), or None."""
    import polars as pl

    from mcptrace import _fields as f

    conds = []
    if args.since is not None:
        conds.append(pl.col(f.TIMESTAMP) >= args.since)
    if args.until is not None:
        conds.append(pl.col(f.TIMESTAMP) < args.until)
    if args.tool:
        conds.append(pl.col(f.TOOL_NAME).is_in(args.tool))
    if args.caller:
        conds.append(pl.col(f.CALLER_ID).is_in(args.caller))
    if also is not None:
        conds.append(also)
    if not conds:
        return None
    out = conds[0]
    for c in conds[1:]:
        out = out & c
    return out


class Progress:
    """`scanning 42% (1.1 of 2.6 GB)` on stderr, only when stderr is a terminal."""

    def __init__(self, label: str = "scanning") -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < 64 * 1024 * 1024:
            return
        pct = 100 * done // max(total, 1)
        sys.stderr.write(f"\r{self.label} {pct:3d}% ({done / 1e9:.1f} of {total / 1e9:.1f} GB)")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def report_problems(report: Any) -> None:
    """Corrupt or unreadable input goes to stderr: counted, located, never silent."""
    summary = report.summary()
    if summary:
        print(f"mcptrace: warning: {summary}", file=sys.stderr)


def load_frame(
    args: argparse.Namespace, *, columns: list[str] | None = None, events: list[str] | None = None,
    rows: Any = None,
) -> Any:
    """Load the paths named on the command line with the common filters applied.

    Naming the `columns` and `events` a command needs matters: parsing only
    those fields is several times faster than parsing whole lines. `rows`, a
    predicate, keeps only the rows the command reads, block by block, so the
    others are never held.
    """
    from mcptrace.analysis import load
    from mcptrace.logs._fleet import fleet_root
    from mcptrace.logs._index import auto_index

    progress = Progress()
    if not args.no_index and fleet_root(args.paths or None) is None:
        try:
            built = auto_index(args.paths or None, progress=Progress("indexing (second query of these logs)"))
        except MCPTraceError:  # the user's mistake (a missing path): `load` says it once, as for --no-index
            built = None
        except Exception as exc:  # an index is an optimisation: the JSON logs still answer
            built = None
            print(
                f"mcptrace: warning: these logs could not be indexed ({type(exc).__name__}: "
                f"{str(exc).strip()[:160]}): read the JSON logs instead",
                file=sys.stderr,
            )
        if built is not None:
            print(f"mcptrace: indexed these logs for faster queries ({built.directory})", file=sys.stderr)
    try:
        loaded = load(
            args.paths or None,
            columns=columns,
            where=row_filter(args, rows),
            events=events,
            progress=progress,
            use_index=not args.no_index,
            replicas=args.replica,
        )
    finally:
        progress.done()
    report_problems(loaded.report)
    return loaded


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The options of `mcptrace serve` that any server of ours takes (serve, proxy): binding, logs, guards.

    Every default is None, so `server_config` leaves it to the `MCPTRACE_*` variable or `Config`'s default.
    """
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8765; 0 picks a free one)")
    parser.add_argument("--log-file", type=Path, help="JSON log file (default .mcptrace/logs/mcptrace.log)")
    parser.add_argument("--log-stderr", action="store_true", default=None, help="also write JSON lines to stderr")
    parser.add_argument("--data-dir", type=Path, help="database and default log directory")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body (default 1 MiB)")
    parser.add_argument("--log-max-bytes", type=int, help="rotate the log file at this size (default 100 MiB)")
    parser.add_argument("--log-backups", type=int, help="rotated log files to keep (default 10)")
    parser.add_argument("--allow-non-loopback", action="store_true", default=None,
                        help="bind a non-loopback address anyway (logged as a warning at every start)")
    guards = parser.add_argument_group("auth and rate limits")
    guards.add_argument("--tokens", type=Path, help="token store; requires bearer tokens")
    guards.add_argument("--jwks", help="JWKS file or URL of the OAuth issuer; accepts JWT access tokens")
    guards.add_argument("--issuer", help="required `iss` of JWT access tokens")
    guards.add_argument("--audience", help="required `aud` of JWT access tokens")
    guards.add_argument("--redis-url", help="share rate limits, suspensions and revocations through Redis")
    guards.add_argument("--replica-id", "--replica", dest="replica_id",
                        help="this replica's name: its session ids start with it (behind a proxy), and its "
                        "shipped logs go to replica=NAME (default the host name)")
    guards.add_argument("--rate-limit-caller", metavar="RATE/BURST", help="per-caller bucket")
    guards.add_argument("--rate-limit-tools", metavar="TOOL=RATE/BURST,...",
                        help="per (caller, tool) buckets; `*` sets the default")
    guards.add_argument("--suspend-after", type=int, help="violations that suspend a caller")
    guards.add_argument("--suspend-seconds", type=parse_seconds, metavar="DURATION",
                        help="how long a suspension lasts (30s, 10m; a bare number is seconds)")
    parser.add_argument("--ship", metavar="URL",
                        help="ship each rotated log file to this folder or s3://bucket/prefix, off the request "
                        "path (see docs/fleet.md)")
    parser.add_argument("--ready-file", type=Path, help="write the server URL to this file once it accepts requests")


def server_config(args: argparse.Namespace, **overrides: Any) -> Any:
    """The `Config` the options of `add_server_options` (and `overrides`) describe, over `MCPTRACE_*`."""
    from mcptrace._config import Config

    return Config.from_env(
        host=args.host, port=args.port, log_file=args.log_file, log_stderr=args.log_stderr,
        data_dir=args.data_dir, max_body_bytes=args.max_body_bytes, allow_non_loopback=args.allow_non_loopback,
        log_max_bytes=args.log_max_bytes, log_backups=args.log_backups,
        tokens_file=args.tokens, jwks=args.jwks, jwt_issuer=args.issuer, jwt_audience=args.audience,
        redis_url=args.redis_url, replica_id=args.replica_id, rate_limit_caller=args.rate_limit_caller,
        rate_limit_tools=args.rate_limit_tools, suspend_after=args.suspend_after,
        suspend_seconds=args.suspend_seconds, ship=args.ship, **overrides,
    )


class NotFound(MCPTraceError):
    """What was asked for is not in the logs."""


class UsageError(MCPTraceError):
    """The command line asks for something that cannot be done (nothing to index, a bad combination)."""
