"""The `mcptrace` command line.

Each command lives in its own module with a `register(subparsers)` function;
modules import what they need inside the command, so `mcptrace chain` never
pays for the server's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mcptrace._errors import MCPTraceError
from mcptrace._version import __version__

#: Command modules, in the order `--help` lists them.
COMMAND_MODULES = ("_serve", "_report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcptrace", description="Run MCP servers in production and investigate them when they break.",
    )
    parser.add_argument("--version", action="version", version=f"mcptrace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"mcptrace.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int | None = args.func(args)
        return result or 0
    except MCPTraceError as exc:
        print(f"mcptrace: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
