"""`mcptrace demo`: a real server under scripted agents, then what its logs say."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the server under scripted agents with planted incidents, then summarise the logs",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("mcptrace-demo"),
        help="run directory for logs and data (default ./mcptrace-demo)",
    )
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from mcptrace.demo import run_demo
    from mcptrace.demo._summary import render

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        say = _stderr
        say(
            f"mcptrace demo: 6 simulated agents, both protocol eras, SSE and JSON-only clients -> {args.out}/"
        )
        result = run_demo(args.out, on_tick=lambda p: say(p.line()), say=say)
    finally:
        signal.signal(signal.SIGTERM, previous)

    progress = result.progress
    print(
        f"\nDone in {time.monotonic() - started:.1f}s: {progress.calls} tool calls, "
        f"{progress.errors} failed (as planted)."
    )
    if progress.cut_short:
        print("  the workload hit its time limit and was stopped early (a very busy machine?)")
    crashed = {name: a.crashed for name, a in progress.agents.items() if a.crashed}
    for name, reason in crashed.items():
        print(f"  agent {name} stopped early: {reason}")
    print(f"Logs: {result.log_file}")
    print(_planted(progress) + "\n")
    print("Calls and errors per tool")
    print(render(result.per_tool))
    print("\nCalls per client (caller_id)")
    print(render(result.per_client))
    _forensics_report(result.log_file)
    print(f"\nNext: `mcptrace --help` lists the commands that investigate {result.log_file.name};"
          " its fields are documented in docs/log-schema.md.")
    return 1 if crashed else 0


def _planted(progress: Any) -> str:
    """Where the planted incidents are, so the summary below can be checked against them."""
    lines = ["Planted: looping-agent repeats one call; status-poller polls (same arguments, new results);",
             "         flaky-client sends bad calls; analyst runs the slow run_report"]
    if progress.outage is not None:
        begin, end = (time.strftime("%H:%M:%S", time.gmtime(t)) for t in progress.outage)
        seconds = progress.outage[1] - progress.outage[0]
        lines.append(f"         upstream outage {begin}-{end} UTC ({seconds:.1f}s)")
    return "\n".join(lines)


def _forensics_report(log_file: Path) -> None:
    """The forensics report, when this installation ships it."""
    try:
        from mcptrace.analysis import report_text
    except ImportError:
        return
    try:
        text: Any = report_text(log_file)
    except Exception as exc:  # the demo's own summary already stands on its own
        print(f"\n(forensics report unavailable: {type(exc).__name__}: {exc})")
        return
    print("\nForensics report")
    print(text)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
