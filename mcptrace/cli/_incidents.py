"""`mcptrace incidents`: what went wrong, found and ranked, one row per cause."""

from __future__ import annotations

import argparse
import re
from typing import Any

from mcptrace.cli._options import add_common, load_frame
from mcptrace.cli._render import emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "incidents",
        help="what went wrong, ranked: outages, error spikes, slow tools, loops, retry and rate-limit storms, "
        "auth failures, restarts, refused resources",
        description="Find and rank what went wrong in the logs, one row per cause, most severe first. Times are UTC.",
    )
    add_common(p)
    p.add_argument(
        "--every", type=_bucket, default="10s", help="time bucket of the error and latency baselines (default 10s)"
    )
    p.set_defaults(func=run_incidents)


def _bucket(text: str) -> str:
    """A whole number of ms, s, m, h or d: what a time bucket can be."""
    if not re.fullmatch(r"[1-9]\d*(ms|s|m|h|d)", text.strip()):
        raise argparse.ArgumentTypeError(f"not a time bucket: {text!r} (use e.g. 10s, 1m, 5m)")
    return text.strip()


def _evidence(value: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (value or {}).items() if v is not None}


def run_incidents(args: argparse.Namespace) -> int:
    from mcptrace.analysis import incidents
    from mcptrace.analysis._incidents import COLUMNS, EVENTS, INCIDENT_COLUMNS
    loaded = load_frame(args, columns=COLUMNS, events=EVENTS)
    rows = incidents(loaded.frame, every=args.every).collect().to_dicts()
    for row in rows:
        row["evidence"] = _evidence(row["evidence"])
    if args.format != "json":
        for row in rows:
            row["evidence"] = " ".join(f"{k}={_number(v)}" for k, v in row["evidence"].items())
            for edge in ("start", "end"):
                row[edge] = row[edge].isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if args.format == "table":
            for row in rows:
                row["request_ids"] = row["request_ids"][:3]
    emit(rows, INCIDENT_COLUMNS, args.format)
    return 0


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
