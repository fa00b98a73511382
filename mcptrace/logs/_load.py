"""Log lines into a typed LazyFrame, with every unreadable line accounted for.

Lines are parsed block by block with the pinned schema (no inference, see
`_parse`), or a clean plain file in one scan by polars.
Only the requested columns and the rows matching `where` are kept, so memory
follows the size of the answer, not of the logs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace.logs._index import indexed_frame
from mcptrace.logs._lines import count_lines, scan_lines, small_line_chunks
from mcptrace.logs._loadreport import CorruptLine, LoadReport
from mcptrace.logs._parse import TS_FORMAT, as_text_timestamp, parse_block, read_schema
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
    `_scan_events`). Lines without a timestamp or an event,
    bad JSON and wrongly typed values are counted in the report, never raised.
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
    if use_index:
        indexed = indexed_frame(sources)
        if indexed is not None:
            lazy, report = indexed
            lazy = lazy.select(list(schema))
            return Loaded(lazy if where is None else lazy.filter(where), report)
    report = LoadReport(files=[s.name for s in sources])
    total = sum(_size(s) for s in sources)
    frames: list[pl.DataFrame] = []
    for source in sources:
        fast = None
        if source.compression is None:
            fast = (
                _scan_events(source, schema, where, events)
                if events and all(_PLAIN_NAME.fullmatch(e) for e in events)
                else _scan_whole(source, schema, where)
            )
        if fast is not None:
            frame, n_lines = fast
            report.lines += n_lines
            report.bytes_read += _size(source)
            if frame.height:
                frames.append(frame)
            if progress is not None:
                progress(report.bytes_read, total)
            continue
        try:
            for first_line, block in iter_blocks(source):
                frame = parse_block(block, first_line=first_line, source=source, schema=schema, report=report)
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


def _scan_whole(source: Source, schema: pl.Schema, where: pl.Expr | None) -> tuple[pl.DataFrame, int] | None:
    """The common case, at polars' native speed: a plain file whose every line is good.

    None when the file has anything to report (a line that does not parse, a
    missing timestamp or event): the caller then reads it block by block,
    which finds each bad line and its number.
    """
    frame = _collect_checked(pl.scan_ndjson(source.path, schema=as_text_timestamp(schema)), where)
    return None if frame is None else (frame, count_lines(source.path))


def _scan_events(
    source: Source, schema: pl.Schema, where: pl.Expr | None, events: Sequence[str]
) -> tuple[pl.DataFrame, int] | None:
    """`_scan_whole` for a query about a few events, parsing only the lines that can be one of them.

    A line whose event is `tool_call` holds the text `tool_call` (or a `\\u`
    escape that spells it), so the other lines are passed over by a substring
    search, which costs a fraction of parsing them. Lines that do not look like
    one JSON object (`{...}`), a truncated last line for one, are parsed too, so
    that they fail and the file is read block by block, which reports them with
    their line numbers. None in that case, as in `_scan_whole`.
    """
    line = pl.col("line")
    maybe = line.str.contains("\\u", literal=True)
    for event in events:
        maybe = maybe | line.str.contains(event, literal=True)
    whole = line.str.starts_with("{") & (line.str.ends_with("}") | line.str.ends_with("}\r"))
    misshapen = ~whole & (line.str.len_bytes() > 0)
    # Counted first: the count maps the whole file for a moment, and then nothing else is held.
    n_lines = count_lines(source.path)
    records = (
        scan_lines(source.path)
        .filter(maybe | misshapen)
        .select(line.str.json_decode(pl.Struct(as_text_timestamp(schema))).struct.unnest())
    )
    with small_line_chunks():
        frame = _collect_checked(records, where)
    return None if frame is None else (frame, n_lines)


def _collect_checked(records: pl.LazyFrame, where: pl.Expr | None) -> pl.DataFrame | None:
    """The rows matching `where`, timestamps converted; None if any row lacks a timestamp or event."""
    stamp = pl.col(f.TIMESTAMP).str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    bad = pl.col(f.TIMESTAMP).is_null() | pl.col(f.EVENT).is_null()
    keep = pl.lit(True) if where is None else where.fill_null(False)
    try:
        # Row-wise expressions only: the streaming engine then holds one batch at a time.
        frame = (
            records.with_columns(stamp)
            .with_columns(keep.alias("_keep"), bad.alias("_bad"))
            .filter(pl.col("_keep") | pl.col("_bad"))
            .collect(engine="streaming")
        )
    except Exception:
        return None
    if frame.get_column("_bad").any():
        return None
    return frame.drop("_keep", "_bad")


#: Event names that JSON writes only as themselves or with `\u` escapes (never `\/` or `\"`).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def _size(source: Source) -> int:
    try:
        return source.path.stat().st_size
    except OSError:
        return 0


