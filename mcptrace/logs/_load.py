"""Log lines into a typed LazyFrame, with every unreadable line accounted for.

Lines are parsed block by block with the pinned schema (no inference, see
`_parse`), or a clean plain file in one scan by polars.
Only the requested columns and the rows matching `where` are kept, so memory
follows the size of the answer, not of the logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace.logs._index import indexed_frame
from mcptrace.logs._judge import judge_line
from mcptrace.logs._lines import count_lines, scan_lines, small_line_chunks
from mcptrace.logs._loadreport import CorruptLine, LoadReport
from mcptrace.logs._parse import (
    LINE,
    NUMBER,
    ODD,
    TS_FORMAT,
    Seen,
    judge_lines,
    lazy_rows,
    odd_line,
    parse_block,
    read_schema,
    settle,
    text_schema,
)
from mcptrace.logs._sources import Paths, Progress, Source, iter_blocks, resolve_sources

__all__ = ["CorruptLine", "LoadReport", "Loaded", "load"]


@dataclass
class Loaded:
    frame: pl.LazyFrame
    report: LoadReport


def load(
    paths: Paths = None,
    *,
    columns: Sequence[str] | None = None,
    where: pl.Expr | None = None,
    events: Sequence[str] | None = None,
    progress: Progress | None = None,
    use_index: bool = True,
) -> Loaded:
    """Read log files into a LazyFrame typed by the pinned schema.

    `columns` narrows what is parsed (timestamp and event are always kept);
    `where` filters rows block by block; `events` keeps only those events, and
    lets a plain file skip parsing the lines that cannot be one of them (see
    `_scan_file`). Every line is judged by the reading rules (`_parse`): the
    ones that are not records are counted in the report with file:line and
    a reason, never raised, and so are values read as null.
    When `mcptrace index` has indexed exactly these files as they are now, the
    Parquet index is read instead (`use_index=False` forces the JSON).
    """
    if events is not None:
        wanted = pl.col(f.EVENT).is_in(list(events))
        where = wanted if where is None else wanted & where
    if columns is not None and where is not None:
        columns = [*columns, *(c for c in where.meta.root_names() if c not in columns)]
    schema = read_schema(columns)
    sources = resolve_sources(paths)
    fallback = None
    if use_index:
        try:
            indexed = indexed_frame(sources)
            if indexed is not None:
                lazy, report = indexed
                lazy = lazy.select(list(schema))
                # Collected here, as the JSON path does: a damaged index is found now, not by the query.
                data = (lazy if where is None else lazy.filter(where)).collect()
                return Loaded(data.lazy(), report)
        except Exception as exc:  # whatever is wrong with the index, the logs themselves still answer
            fallback = f"the index of these logs cannot be read ({_short(exc)}): read the JSON logs instead"
    report = LoadReport(files=[s.name for s in sources])
    if fallback is not None:
        report.unreadable.append(fallback)
    total = sum(_size(s) for s in sources)
    frames: list[pl.DataFrame] = []
    for source in sources:
        if source.compression is None:
            try:
                frame = _scan_file(source, schema, where, events, report)
            except pl.exceptions.PolarsError:  # polars refused a run of lines: each block is judged alone
                frame = None
            if frame is not None:
                report.bytes_read += _size(source)
                if frame.height:
                    frames.append(frame)
                if progress is not None:
                    progress(report.bytes_read, total)
                continue
        seen = Seen()
        try:
            for first_line, block in iter_blocks(source):
                frame = parse_block(
                    block,
                    first_line=first_line,
                    source=source,
                    schema=schema,
                    report=report,
                    events=events,
                    seen=seen,
                )
                report.bytes_read += len(block)
                if where is not None and frame.height:
                    frame = frame.filter(where)
                if frame.height:
                    frames.append(frame)
                if progress is not None:
                    progress(report.bytes_read, total)
        except LogReadError as exc:
            report.unreadable.append(str(exc))
    data = pl.concat(frames, how="vertical", rechunk=False) if frames else pl.DataFrame(schema=schema)
    return Loaded(data.lazy(), report)


def _scan_file(
    source: Source, schema: pl.Schema, where: pl.Expr | None, events: Sequence[str] | None, report: LoadReport
) -> pl.DataFrame | None:
    """A plain file in one polars pass on every core, by the same rules as `parse_block`.

    Lines that cannot be one JSON object are set aside by their text in that
    pass and judged one by one, so a corrupt line costs only its own bytes.
    With `events`, lines that cannot hold one of them (their text does not
    contain the name, nor a `\\u` escape, nor an `"event"` key) are not decoded.
    None when polars refuses a run of lines that looked whole (an object where
    text belongs): the caller then reads the file block by block.
    """
    line = pl.col(LINE)
    # Counted first: the count maps the whole file for a moment, and then nothing else is held.
    n_lines = count_lines(source.path)
    lines = scan_lines(source.path).with_row_index(NUMBER, offset=1).with_columns(pl.col(NUMBER).cast(pl.Int64))
    if events and all(_PLAIN_NAME.fullmatch(e) for e in events):
        maybe = line.str.contains("\\u", literal=True) | ~line.str.contains('"' + f.EVENT + '"', literal=True)
        for event in events:
            maybe = maybe | line.str.contains(event, literal=True)
        lines = lines.filter(maybe | odd_line(line))
    rows = lazy_rows(lines, schema)
    fast = _fast_where(where, schema)
    if fast is not None:
        stamp = pl.col(f.TIMESTAMP).str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
        unsure = pl.col(f.TIMESTAMP).is_null() | pl.col(f.EVENT).is_null() | pl.col(ODD).is_not_null()
        keep = fast.fill_null(False) | unsure
        rows = (
            rows.with_columns(pl.col(f.TIMESTAMP).alias("_stamp_text"))
            .with_columns(stamp)
            .filter(keep)
            .with_columns(pl.col("_stamp_text").alias(f.TIMESTAMP))
            .drop("_stamp_text")
        )
    with small_line_chunks():
        collected = rows.collect(engine="streaming")
    report.lines += n_lines
    since = report.mark()
    odd = collected.filter(pl.col(ODD).is_not_null())
    if odd.height:
        collected = collected.filter(pl.col(ODD).is_null())
    collected = Seen().drop_repeats(collected, source=source, report=report, events=events)
    if odd.height:
        odd = _set_aside_bad_bytes(odd, source, report)
    if odd.height:
        judged = judge_lines(
            odd.select(pl.col(NUMBER), pl.col(ODD).alias(LINE)),
            schema=schema,
            source=source,
            report=report,
            raw=lambda numbers: _raw_lines(source, numbers, odd),
            last_unterminated=n_lines if not _ends_with_newline(source) else None,
            events=events,
        )
    frame = settle(
        collected, schema, source=source, report=report, text_of=lambda n: lines_by_number(source, n), events=events
    )
    if odd.height and judged.height:  # repaired lines (rare) go back to their place: a merge, not a sort
        frame = frame.merge_sorted(judged.select(frame.columns), key=NUMBER)
    report.in_line_order(since)
    frame = frame.drop(NUMBER)
    return frame if where is None else frame.filter(where)


def _fast_where(where: pl.Expr | None, schema: pl.Schema) -> pl.Expr | None:
    """`where`, if it can be applied inside the scan (it reads only text fields and the timestamp)."""
    if where is None:
        return None
    texts = {n for n, t in text_schema(schema).items() if t == pl.String() and t == schema[n]}
    names = set(where.meta.root_names())
    return where if names <= texts | {f.TIMESTAMP} else None


def _set_aside_bad_bytes(odd: pl.DataFrame, source: Source, report: LoadReport) -> pl.DataFrame:
    """Reject at once the lines read lossily that would be rejected anyway: they are not UTF-8.

    Only a lossy line that reads as a record from its lossy text needs its
    exact bytes from the file (it may hold a U+FFFD that was written as such).
    """
    lossy = odd.get_column(ODD).str.contains("\ufffd", literal=True)
    if not lossy.any():
        return odd
    keep = []
    for number, text, is_lossy in zip(odd.get_column(NUMBER), odd.get_column(ODD), lossy, strict=True):
        if is_lossy and judge_line(text.encode()).record is None:
            report.add_corrupt(source, number, "not UTF-8", text.encode())
            keep.append(False)
        else:
            keep.append(True)
    return odd.filter(pl.Series(keep, dtype=pl.Boolean))


def _raw_lines(source: Source, numbers: list[int], odd: pl.DataFrame) -> dict[int, bytes]:
    """Exact bytes of odd lines: their text, unless it was read lossily (then from the file)."""
    texts = dict(zip(odd.get_column(NUMBER).to_list(), odd.get_column(ODD).to_list(), strict=True))
    out = {n: texts.get(n, "").encode() for n in numbers}
    lossy = sorted(n for n in numbers if "\ufffd" in texts.get(n, ""))
    if lossy:
        out.update(lines_by_number(source, lossy))
    return out


def lines_by_number(source: Source, numbers: list[int]) -> dict[int, bytes]:
    """The raw lines of a plain file with these (sorted) numbers, in one pass that stops at the last.

    The file is mapped, not read: newlines are counted a window at a time with
    numpy, and only the wanted lines are copied out, so a few bad lines cost a
    scan at memory speed rather than a second read of the log.
    """
    import numpy as np

    wanted = sorted(set(numbers))
    out: dict[int, bytes] = {}
    if not wanted:
        return out
    try:
        data = np.memmap(source.path, dtype=np.uint8, mode="r")
    except (OSError, ValueError):  # empty or unreadable: nothing to show
        return out
    if 1 in wanted:
        out[1] = _line_from(data, 0)
    targets = iter(n for n in wanted if n > 1)
    target = next(targets, None)
    before = 0  # newlines before `pos`
    pos = 0
    while target is not None and pos < len(data):
        window = np.flatnonzero(data[pos : pos + _WINDOW] == 10)
        while target is not None and target - 1 <= before + len(window):
            start = pos + int(window[target - 2 - before]) + 1  # just after the (target-1)-th newline
            out[target] = _line_from(data, start)
            target = next(targets, None)
        before += len(window)
        pos += _WINDOW
    return out


_WINDOW = 64 * 1024 * 1024


def _line_from(data: Any, start: int) -> bytes:
    end = start
    while end < len(data):
        piece = bytes(data[end : end + 65536])
        cut = piece.find(b"\n")
        if cut >= 0:
            return bytes(data[start : end + cut])
        end += len(piece)
    return bytes(data[start:])


def _ends_with_newline(source: Source) -> bool:
    try:
        with open(source.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
    except OSError:
        return True


#: Event names that JSON writes only as themselves or with `\u` escapes (never `\/` or `\"`).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:120]}" if text else type(exc).__name__


def _size(source: Source) -> int:
    try:
        return source.path.stat().st_size
    except OSError:
        return 0
