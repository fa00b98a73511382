"""`mcptrace registry update`: change an `mcp.json` entry only when the gate passes against its URL."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mcptrace.cli._gate import add_gate_arguments, gate_options, print_report
from mcptrace.cli._render import add_format


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    registry = sub.add_parser("registry", help="gated changes to an mcp.json registry")
    actions = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    update = actions.add_parser(
        "update", help="write or change an entry, only if the gate passes against URL"
    )
    update.add_argument("registry", type=Path, help="the mcp.json file")
    update.add_argument("--name", required=True, help="entry name under mcpServers")
    update.add_argument("--url", required=True, help="the MCP endpoint the entry will point at")
    add_gate_arguments(update)
    add_format(update, json_alias=True)
    update.set_defaults(func=_update)


def _update(args: argparse.Namespace) -> int:
    import anyio

    from mcptrace.gate._gate import run_gate
    from mcptrace.gate._registry import RegistryRefused, apply_update, check_name, read_registry

    check_name(args.name)
    read_registry(args.registry)  # a malformed file is reported before any network traffic
    report = anyio.run(run_gate, args.url, gate_options(args))
    print_report(report, fmt=args.format)
    try:
        change = apply_update(args.registry, name=args.name, url=args.url, report=report)
    except RegistryRefused as exc:
        print(f"mcptrace: refused: {exc}", file=sys.stderr)
        return 1
    detail = f" (was {change.previous_url})" if change.action == "changed" else ""
    print(f"{change.action} {change.name} -> {change.url} in {change.path}{detail}", file=sys.stderr)
    return 0
