"""Log lines into a typed LazyFrame, with every unreadable line accounted for.

Lines are parsed block by block with the pinned schema (no inference). A block
that parses cleanly costs one call into polars; a block with a bad line is
narrowed down (bisection) until each bad line is isolated, so the good lines
around it are kept and the bad one is reported with its file and line number.
Only the requested columns and the rows matching `where` are kept, so memory
follows the size of the answer, not of the logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace._schema import polars_schema
from mcptrace.analysis._loadreport import CorruptLine, LoadReport
from mcptrace.analysis._sources import Paths, Source, iter_blocks, resolve_sources

__all__ = ["CorruptLine", "LoadReport", "Loaded", "Progress", "load", "parse_block", "read_schema"]

Progress = Callable[[int, int], None]


@dataclass
class Loaded:
    frame: pl.LazyFrame
    report: LoadReport


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
        from mcptrace.analysis._index import indexed_frame

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
    frame = _collect_checked(pl.scan_ndjson(source.path, schema=_as_text_timestamp(schema)), where)
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
        _scan_lines(source.path)
        .filter(maybe | misshapen)
        .select(line.str.json_decode(pl.Struct(_as_text_timestamp(schema))).struct.unnest())
    )
    with _small_line_chunks():
        frame = _collect_checked(records, where)
    return None if frame is None else (frame, n_lines)


def _collect_checked(records: pl.LazyFrame, where: pl.Expr | None) -> pl.DataFrame | None:
    """The rows matching `where`, timestamps converted; None if any row lacks a timestamp or event."""
    stamp = pl.col(f.TIMESTAMP).str.to_datetime(_TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
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


#: Bytes per chunk when polars' CSV reader splits a log into lines. Its own default grows with the
#: file, to hundreds of MB in flight on a GB log; at 1 MB the split holds about 80 MB, as fast.
LINE_CHUNK_BYTES = 1 << 20
_CSV_CHUNK_VARIABLE = "POLARS_CSV_CHUNK_SIZE"


@contextmanager
def _small_line_chunks() -> Iterator[None]:
    """`LINE_CHUNK_BYTES` chunks for the queries collected inside (polars reads the variable at collect
    time); a value the user set is left alone."""
    if _CSV_CHUNK_VARIABLE in os.environ:
        yield
        return
    os.environ[_CSV_CHUNK_VARIABLE] = str(LINE_CHUNK_BYTES)
    try:
        yield
    finally:
        os.environ.pop(_CSV_CHUNK_VARIABLE, None)


def _scan_lines(path: os.PathLike[str] | str) -> pl.LazyFrame:
    """A file's lines as one text column, split by polars' CSV reader on every core.

    No quote character and a separator that JSON text cannot hold unescaped: a
    row is a line, whatever it contains.
    """
    return pl.scan_csv(
        os.fspath(path), has_header=False, separator="\x1f", quote_char=None, schema={"line": pl.String}
    )


def count_lines(path: os.PathLike[str] | str) -> int:
    """Newline-terminated lines plus a last line without one (a byte count, no parsing).

    polars' CSV reader counts rows without splitting fields, on every core: with
    no quote character and a separator JSON cannot hold, its rows are the lines.
    """
    try:
        return int(_scan_lines(path).select(pl.len()).collect().item())
    except Exception:  # polars could not read it as text: count the bytes ourselves
        return _count_newlines(path)


def _count_newlines(path: os.PathLike[str] | str) -> int:
    lines = 0
    last = b"\n"
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(16 * 1024 * 1024)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            chunk = view[:n]
            lines += buf.count(b"\n", 0, n)
            last = bytes(chunk[-1:])
    return lines + (0 if last == b"\n" else 1)


def _size(source: Source) -> int:
    try:
        return source.path.stat().st_size
    except OSError:
        return 0


def parse_block(
    block: bytes, *, first_line: int, source: Source, schema: pl.Schema, report: LoadReport
) -> pl.DataFrame:
    """Parse whole lines; bad ones go to `report` with their line numbers."""
    n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    report.lines += n_lines
    text_schema = _as_text_timestamp(schema)
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


def _as_text_timestamp(schema: pl.Schema) -> pl.Schema:
    """Timestamps are read as text and converted afterwards: much faster than the JSON reader's parsing."""
    return pl.Schema({n: (pl.String() if n == f.TIMESTAMP else t) for n, t in schema.items()})


#: The writer's format, tried first; anything else ISO 8601-like is inferred (offsets become UTC).
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"


def _to_utc(text: pl.Series) -> pl.Series:
    fast = text.str.to_datetime(_TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
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
