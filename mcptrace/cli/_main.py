"""The parser every command registers into, and the entry point that turns mistakes into one line."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from mcptrace._errors import MCPTraceError
from mcptrace._version import __version__


def command_modules() -> list[str]:
    """Every `mcptrace.cli._*` module: each registers its own commands."""
    here = [str(Path(__file__).parent)]
    return sorted(m.name for m in pkgutil.iter_modules(here) if m.name.startswith("_") and m.name != "_main")


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
