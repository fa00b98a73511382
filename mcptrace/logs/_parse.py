"""Blocks of log lines into typed rows: the pinned schema, and every bad line set aside with its number.

A block that parses cleanly costs one call into polars; a block with a bad line
is narrowed down (bisection) until each bad line is isolated, so the good lines
around it are kept and the bad one is reported with its file and line number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import polars as pl

from mcptrace import _fields as f
from mcptrace._schema import polars_schema
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._sources import Source

__all__ = ["TS_FORMAT", "as_text_timestamp", "parse_block", "read_schema"]


def read_schema(columns: Sequence[str] | None = None) -> pl.Schema:
    """The pinned schema, narrowed to `columns` (unknown names are an error)."""
    full = polars_schema()
    if columns is None:
        return full
    missing = [c for c in columns if c not in full]
    if missing:
        raise ValueError(f"not log fields: {', '.join(missing)}")
    wanted = dict.fromkeys([f.TIMESTAMP, f.EVENT, *columns])
    return pl.Schema({name: full[name] for name in wanted})




def parse_block(
    block: bytes, *, first_line: int, source: Source, schema: pl.Schema, report: LoadReport
) -> pl.DataFrame:
    """Parse whole lines; bad ones go to `report` with their line numbers."""
    n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    report.lines += n_lines
    text_schema = as_text_timestamp(schema)
    try:
        frame = pl.read_ndjson(block, schema=text_schema)
    except Exception:
        frame = None
    if frame is not None and frame.height == n_lines:
        return _require(frame, list(range(first_line, first_line + n_lines)), source, report, block=block)
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    good: list[bytes] = []
    numbers: list[int] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reason = "truncated line" if i == len(lines) - 1 and not block.endswith(b"\n") else "bad JSON"
            report.add_corrupt(source, first_line + i, f"{reason} ({exc})", line)
            continue
        if not isinstance(value, dict):
            report.add_corrupt(source, first_line + i, f"not a JSON object ({type(value).__name__})", line)
            continue
        good.append(line)
        numbers.append(first_line + i)
    frames = list(_bisect(good, numbers, source, text_schema, report))
    if not frames:
        return pl.DataFrame(schema=schema)
    frame = pl.concat([fr for fr, _ in frames], how="vertical")
    kept = [n for _, ns in frames for n in ns]
    return _require(frame, kept, source, report, lines=dict(zip(numbers, good, strict=True)))


def _bisect(
    lines: list[bytes], numbers: list[int], source: Source, schema: pl.Schema, report: LoadReport
) -> Any:
    """Yield (frame, line numbers) for the parseable runs of `lines`; report the rest."""
    if not lines:
        return
    try:
        frame = pl.read_ndjson(b"\n".join(lines), schema=schema)
        if frame.height == len(lines):
            yield frame, numbers
            return
    except Exception as exc:
        if len(lines) == 1:
            report.add_corrupt(source, numbers[0], f"wrong type ({_short(exc)})", lines[0])
            return
    if len(lines) == 1:
        report.add_corrupt(source, numbers[0], "unparseable line", lines[0])
        return
    mid = len(lines) // 2
    yield from _bisect(lines[:mid], numbers[:mid], source, schema, report)
    yield from _bisect(lines[mid:], numbers[mid:], source, schema, report)


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def as_text_timestamp(schema: pl.Schema) -> pl.Schema:
    """Timestamps are read as text and converted afterwards: much faster than the JSON reader's parsing."""
    return pl.Schema({n: (pl.String() if n == f.TIMESTAMP else t) for n, t in schema.items()})


#: The writer's format, tried first; anything else ISO 8601-like is inferred (offsets become UTC).
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"


def _to_utc(text: pl.Series) -> pl.Series:
    fast = text.str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    missed = fast.is_null() & text.is_not_null()
    if not missed.any():
        return fast
    try:
        other = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    except Exception:  # no format could be inferred for the whole column
        return fast
    return fast.fill_null(other)


def _require(
    frame: pl.DataFrame,
    numbers: list[int],
    source: Source,
    report: LoadReport,
    *,
    block: bytes | None = None,
    lines: dict[int, bytes] | None = None,
) -> pl.DataFrame:
    """Convert timestamps; drop (and report) rows without a usable timestamp or an event."""
    text = frame.get_column(f.TIMESTAMP)
    stamps = _to_utc(text)
    frame = frame.with_columns(stamps)
    bad_mask = stamps.is_null() | frame.get_column(f.EVENT).is_null()
    if not bad_mask.any():
        return frame
    raw = lines if lines is not None else _split_numbered(block or b"", numbers[0] if numbers else 1)
    for idx in bad_mask.arg_true().to_list():
        number = numbers[idx]
        problems = []
        if text[idx] is None:
            problems.append("missing timestamp")
        elif stamps[idx] is None:
            problems.append(f"unreadable timestamp {text[idx]!r}")
        if frame[idx, f.EVENT] is None:
            problems.append("missing event")
        report.add_corrupt(source, number, " and ".join(problems), raw.get(number, b""))
    return frame.filter(~bad_mask)


def _split_numbered(block: bytes, first_line: int) -> dict[int, bytes]:
    return {first_line + i: line for i, line in enumerate(block.split(b"\n"))}
