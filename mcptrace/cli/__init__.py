"""The `mcptrace` command line.

Each command lives in its own module with a `register(subparsers)` function;
modules import what they need inside the command, so `mcptrace chain` never
pays for the server's imports.

Exit codes: 0 success, 1 the check failed (gate, probe, a refused change),
2 a user mistake (a bad option, path, duration, busy port or missing extra),
reported as one `mcptrace: error: ...` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from mcptrace._errors import MCPTraceError
from mcptrace._version import __version__


def command_modules() -> list[str]:
    """Every `mcptrace.cli._*` module: each registers its own commands."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("_"))


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (`mcptrace stats: error: ...`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcptrace", description="Run MCP servers in production and investigate them when they break.",
    )
    parser.add_argument("--version", action="version", version=f"mcptrace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        register = getattr(importlib.import_module(f"mcptrace.cli.{name}"), "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Paths may follow options (`mcptrace chain ID --format json logs/`).
    paths = getattr(args, "paths", None)
    if extra and isinstance(paths, list) and not any(e.startswith("-") and e != "-" for e in extra):
        paths.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int | None = args.func(args)
        return result or 0
    except MCPTraceError as exc:
        print(f"mcptrace: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that does not exist or cannot be read or written
        if isinstance(exc, BrokenPipeError):
            return 0
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mcptrace: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
