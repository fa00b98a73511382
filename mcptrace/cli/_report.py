"""`mcptrace report`: a standalone HTML report of a log set, optionally with PNG figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcptrace.cli._options import parse_window
from mcptrace.cli._render import add_format, dump_json, emit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="write a standalone HTML report (and PNGs) of a log set",
        description="Write the notebook's incident figures to one self-contained HTML page.",
    )
    report.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="log files or directories, or a fleet dataset (s3:// URL or folder) (default: the server's log file)",
    )
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="HTML file to write")
    report.add_argument("--png", type=Path, metavar="DIR", help="also write every figure as DIR/NAME.png")
    report.add_argument(
        "--every", type=parse_window, default="5s", metavar="WINDOW",
        help="time bucket of the time series; a duration with its unit (1s, 30s, 5m; default 5s)",
    )
    report.add_argument(
        "--replica", action="append", help="only this replica of a fleet dataset (an s3:// URL or folder; repeatable)"
    )
    report.add_argument("--title", help="page title")
    add_format(report)
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from mcptrace.notebook._report import build_report

    paths = args.paths
    if not paths:
        from mcptrace._config import Config

        paths = [Config.from_env().resolved_log_file]
    report = build_report(paths, every=args.every, title=args.title, replicas=args.replica)
    out = report.write_html(args.output)
    pngs = report.write_pngs(args.png) if args.png else []
    row = {"html": str(out), "figures": sorted(report.figures), "pngs": [str(p) for p in pngs]}
    if args.format == "json":
        dump_json(row)
    elif args.format == "csv":
        emit([row], list(row), "csv")
    else:
        print(f"wrote {out} ({len(report.figures)} figures)")
        if args.png:
            print(f"wrote {len(pngs)} PNG files to {args.png}")
    return 0
