"""`mcptrace manifest build`: pin remote tools and prompts to the SHA-256 of their reviewed bytes."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcptrace.cli._options import parse_seconds


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    manifest = sub.add_parser("manifest", help="hash-pinned remote tools and prompts")
    actions = manifest.add_subparsers(dest="manifest_command", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="fetch URLs now and record URL -> SHA-256 in a manifest")
    build.add_argument(
        "urls", nargs="+", metavar="URL", help="immutable resource URLs (a version or digest in them)"
    )
    build.add_argument("-o", "--output", type=Path, required=True, help="manifest file to write")
    build.add_argument(
        "--timeout", type=parse_seconds, default=10.0, metavar="DURATION",
        help="time allowed per fetch (10s, 1m; a bare number is seconds; default 10s)",
    )
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from mcptrace._files import atomic_write
    from mcptrace.server._pinning import build_manifest, manifest_bytes

    resources = build_manifest(list(args.urls), timeout=args.timeout)
    atomic_write(args.output, manifest_bytes(resources))
    for r in resources:
        print(f"{r.sha256}  {r.kind:<6} {r.name:<24} {r.url}")
    print(f"wrote {args.output} ({len(resources)} resources)")
    return 0
