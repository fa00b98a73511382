"""Printing analysis results: aligned tables for people, JSON and CSV for programs.

Rows are plain dicts so that `chain` can print without importing polars.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

import orjson

FORMATS = ("table", "json", "csv")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, list):
        text = ",".join(cell(v) for v in value)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    if not rows:
        print("(no rows)", file=out)
        return
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [
        any(isinstance(row.get(c), int | float) for row in rows)
        and all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows)
        for c in columns
    ]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric, strict=True)]
        print("  ".join(parts).rstrip(), file=out)


def dump_json(value: Sequence[dict[str, Any]] | dict[str, Any], out: IO[str] | None = None) -> None:
    """A list of rows, or one object for the commands documented to print one (docs/cli.md)."""
    out = out or sys.stdout
    data = value if isinstance(value, dict) else list(value)
    out.write(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z, default=str).decode()
    )
    out.write("\n")


def dump_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: IO[str] | None = None) -> None:
    out = out or sys.stdout
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=str).decode()
    return value


def emit(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, out: IO[str] | None = None
) -> None:
    """Print rows in the chosen format (JSON keeps every key, the others the listed columns)."""
    out = out or sys.stdout
    if fmt == "json":
        dump_json(rows, out)
    elif fmt == "csv":
        dump_csv(rows, columns, out)
    else:
        table(rows, columns, out)


def add_format(parser: Any, *, json_alias: bool = False) -> None:
    """`--format table|json|csv`; `json_alias` keeps an older `--json` working, hidden from the help."""
    import argparse

    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    if json_alias:
        parser.add_argument("--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS)
