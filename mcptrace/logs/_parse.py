"""Lines into typed rows by the reading rules (`mcptrace._schema.READING_RULES`), every bad line set aside.

The rules are applied in bulk by polars, and line by line by `_judge` for the
few lines polars cannot read, with the same outcome (a property test holds the
two together):

1. Lines that cannot be one JSON object (not UTF-8, not `{...}`, two objects
   torn together) are set aside at once by their text and judged one by one.
2. The other lines are decoded together; text, numbers and timestamps are read
   as text and converted afterwards, value by value, so a wrong value is read
   as null (and noted) without failing its neighbours. If polars still refuses
   a run of lines (an object where text belongs), the run is split in halves
   until each refused line is judged alone: a bad line costs its own bytes.
3. A row without a readable timestamp or an event is rejected with its line
   number; a timestamp without an offset is UTC.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl

from mcptrace import _fields as f
from mcptrace._schema import LOG_SCHEMA_VERSION, polars_schema
from mcptrace.logs._judge import judge_line, parse_timestamp
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._sources import Source

__all__ = [
    "LINE",
    "NUMBER",
    "ODD",
    "DecodedBlock",
    "Seen",
    "TS_FORMAT",
    "blank_line",
    "decode_block",
    "decoded_rows",
    "judge_block",
    "judge_lines",
    "lazy_rows",
    "lines_frame",
    "may_hold",
    "odd_line",
    "parse_block",
    "read_schema",
    "settle",
    "text_column",
    "text_schema",
]

#: The writer's format, tried first for the whole column; anything else goes through `parse_timestamp`.
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
#: Lines decoded by one polars call before a refused run is split.
_RUN = 1 << 16
LINE = "line"
NUMBER = "_n"
ODD = "_odd"
HASH = "_hash"
_SCALARS_AS_TEXT = (pl.Datetime, pl.Int64, pl.Float64)


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


def text_schema(schema: pl.Schema) -> pl.Schema:
    """What polars decodes: timestamps and numbers as text, converted by `settle` value by value."""
    return pl.Schema({n: (pl.String() if isinstance(t, _SCALARS_AS_TEXT) else t) for n, t in schema.items()})


def odd_line(line: pl.Expr, *, ascii: bool = False) -> pl.Expr:
    """True for a line that cannot be one JSON object as it stands: judged alone, never decoded in bulk.

    Not UTF-8 (null, or U+FFFD from a lossy read), not `{...}` (whitespace
    aside), or two records torn together (a line cut by a crash, then the next
    line written after it). `ascii` says the text is known to be ASCII (so
    holds no U+FFFD): one search fewer.
    """
    odd = (
        line.is_null()
        | ~line.str.contains(r"^\s*\{")
        | ~line.str.contains(r"\}\s*$")
        | (line.str.count_matches('"' + f.TIMESTAMP + '"', literal=True) > 1)
    )
    if not ascii:
        odd = odd | line.str.contains("\ufffd", literal=True)
    return odd.fill_null(True)


def may_hold(line: pl.Expr, events: Sequence[str]) -> pl.Expr:
    """False for a line that cannot be a record of `events`: it is not decoded at all.

    Such a line has an `"event"` key, no `\\u` escape, and none of the names in
    its text (event names that JSON writes only as themselves are checked so;
    with any other name every line is decoded).
    """
    if not all(_PLAIN_NAME.fullmatch(e) for e in events):
        return pl.lit(True)
    # One pass for every name (a regex of literals) and a search that stops at the key, near the start.
    named = line.str.contains("|".join([re.escape("\\u"), *(re.escape(e) for e in events)]))
    return named | ~line.str.contains('"' + f.EVENT + '"', literal=True)


#: Event names that JSON writes only as themselves or with `\u` escapes (never `\/` or `\"`).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def blank_line(line: pl.Expr) -> pl.Expr:
    """True for an empty or all-whitespace line (skipped, not counted as corrupt)."""
    return line.is_not_null() & line.str.contains(r"^\s*$")


def lazy_rows(lines: pl.LazyFrame, schema: pl.Schema) -> pl.LazyFrame:
    """(line number, decoded fields as text, the odd line's text) per non-blank line: one polars pass.

    An odd line is decoded as `{}` (a row of nulls, dropped later) so that the
    decoding stays one bulk call over the column.
    """
    line = pl.col(LINE)
    return (
        lines.filter(~blank_line(line))
        .with_columns(odd_line(line).alias(ODD))
        .select(
            pl.col(NUMBER),
            pl.when(pl.col(ODD)).then(pl.lit("{}")).otherwise(line).str.json_decode(pl.Struct(_decoded_schema(schema)))
            .struct.unnest(),
            pl.when(pl.col(ODD)).then(line.fill_null("")).alias(ODD),
            pl.when(~pl.col(ODD)).then(line.hash()).alias(HASH),
        )
    )


def _decoded_schema(schema: pl.Schema) -> pl.Schema:
    """`text_schema`, with the schema version always (a newer one is counted, see `settle`)."""
    decoded = text_schema(schema)
    if f.SCHEMA_VERSION not in decoded:
        decoded = pl.Schema({**decoded, f.SCHEMA_VERSION: pl.String()})
    return decoded


class Seen:
    """The lines of one file read so far (by a 64-bit hash of their text): a line read again is a repeat.

    Kept per file: blocks of one file are read in order, and each repeat is
    dropped and reported with its line number, so it is counted once.
    The hashes are held as sorted numpy tiers (8 bytes a distinct line) that
    merge when the newest is as large as the one before it, so a block is
    looked up in a few binary searches and each hash is re-sorted O(log n)
    times: time near-linear in the file and memory of 8 bytes a line, never a
    copy of everything seen per block. Tiers stop merging at `tier_cap` hashes,
    so no merge ever copies more than that at once.
    """

    def __init__(self, *, tier_cap: int = 1 << 21) -> None:
        self._tiers: list[np.ndarray[Any, np.dtype[np.uint64]]] = []
        self._cap = tier_cap

    @property
    def count(self) -> int:
        """Distinct lines held."""
        return sum(len(t) for t in self._tiers)

    def knows_any(self, other: Seen) -> bool:
        """Whether any line held by `other` is held here too."""
        if not self._tiers:
            return False
        return any(self._known(tier).any() for tier in other._tiers)

    def absorb(self, other: Seen) -> None:
        """Hold the lines of `other` too (lines read after these, none of them a repeat of these)."""
        for tier in other._tiers:
            self._add(tier)

    def drop_repeats(
        self, rows: pl.DataFrame, *, source: Source, report: LoadReport, events: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """`rows` (decoded, with line numbers and hashes) without the repeats of earlier lines.

        Repeats of lines of other `events` are dropped without a word: the query never reads them.
        """
        if HASH not in rows.columns or not rows.height:
            return rows
        hashes = rows.get_column(HASH)
        repeat = hashes.is_not_null() & (
            pl.DataFrame([hashes, rows.get_column(NUMBER)])
            .select(pl.col(NUMBER) != pl.col(NUMBER).min().over(HASH))
            .to_series()
        )
        fresh = ~repeat & hashes.is_not_null()
        if self._tiers:
            known = self._known(hashes.fill_null(0).to_numpy())
            repeat = repeat | (pl.Series(known) & hashes.is_not_null())
            fresh = fresh & ~repeat
        self._add(hashes.filter(fresh).to_numpy())
        if not repeat.any():
            return rows
        told = repeat if events is None else repeat & rows.get_column(f.EVENT).is_in(list(events)).fill_null(True)
        for number in rows.get_column(NUMBER).filter(told).to_list():
            report.add_duplicate(source, number)
        return rows.filter(~repeat)

    def _known(self, hashes: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, np.dtype[np.bool_]]:
        order = np.argsort(hashes)
        keys = hashes[order]  # sorted keys: each binary search starts where the last one ended
        found = np.zeros(len(keys), dtype=np.bool_)
        for tier in self._tiers:
            at = np.searchsorted(tier, keys)
            at[at == len(tier)] = 0
            found |= tier[at] == keys
        out = np.empty_like(found)
        out[order] = found
        return out

    def _add(self, hashes: np.ndarray[Any, np.dtype[np.uint64]]) -> None:
        if not len(hashes):
            return
        new = np.sort(hashes.astype(np.uint64, copy=False))
        while self._tiers and len(self._tiers[-1]) <= len(new) and len(self._tiers[-1]) + len(new) <= self._cap:
            # Two sorted runs: the stable sort (timsort) merges them in one linear pass.
            new = np.sort(np.concatenate([self._tiers.pop(), new]), kind="stable")
        self._tiers.append(new)


def settle(
    rows: pl.DataFrame,
    schema: pl.Schema,
    *,
    source: Source,
    report: LoadReport,
    text_of: Callable[[list[int]], dict[int, bytes]],
    events: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Convert decoded text to the schema's types, reject rows without a timestamp or event.

    `text_of` gives the raw lines of some line numbers (for the report);
    rejections of lines whose event is known and not in `events` are not the
    reader's concern and are dropped silently, as a query that skips those
    lines would.
    """
    converted = []
    notes: list[tuple[int, str]] = []
    numbers = rows.get_column(NUMBER)
    for name, dtype in schema.items():
        column = (
            rows.get_column(name)
            if name in rows.columns
            else pl.Series(name, [None] * rows.height, dtype=text_schema(schema)[name])
        )
        if name == f.TIMESTAMP or isinstance(dtype, pl.Datetime):
            value = to_utc(column)
        elif isinstance(dtype, pl.Int64 | pl.Float64):
            value = _to_number(column, dtype)
        else:
            converted.append(column)
            continue
        if name != f.TIMESTAMP:
            lost = column.is_not_null() & value.is_null()
            for i in lost.arg_true().to_list():
                notes.append((numbers[i], f"{name}: expected {_kind(dtype)}, got {column[i]!r:.40}; read as null"))
        converted.append(value.alias(name))
    frame = pl.DataFrame(converted, schema=schema) if converted else pl.DataFrame(schema=schema)
    frame = frame.insert_column(0, numbers)
    for number, note in notes:
        report.add_note(source, number, note)
    no_text = pl.Series([None] * rows.height, dtype=pl.String)  # no line of `rows` had one
    text = rows.get_column(f.TIMESTAMP) if f.TIMESTAMP in rows.columns else no_text
    stamps, event = frame.get_column(f.TIMESTAMP), frame.get_column(f.EVENT)
    bad = stamps.is_null() | event.is_null()
    _count_newer(rows, ~bad, report)
    if not bad.any():
        return frame
    indices = bad.arg_true().to_list()
    raw = text_of([numbers[i] for i in indices])
    for i in indices:
        if event[i] is not None and events is not None and event[i] not in events:
            continue
        problems = []
        if text[i] is None:
            problems.append("missing timestamp")
        elif stamps[i] is None:
            problems.append(f"unreadable timestamp {text[i]!r}")
        if event[i] is None:
            problems.append("missing event")
        report.add_corrupt(source, numbers[i], " and ".join(problems), raw.get(numbers[i], b""))
    return frame.filter(~bad)


def _count_newer(rows: pl.DataFrame, accepted: pl.Series, report: LoadReport) -> None:
    """Count the accepted lines of a schema version newer than this reader's (read by today's rules)."""
    if f.SCHEMA_VERSION not in rows.columns:
        return
    versions = rows.get_column(f.SCHEMA_VERSION).cast(pl.Int64, strict=False)
    newer = versions.filter(accepted & (versions > LOG_SCHEMA_VERSION).fill_null(False))
    for version, count in newer.value_counts().iter_rows():
        report.add_newer(version, count)


def _kind(dtype: pl.DataType) -> str:
    return "int" if isinstance(dtype, pl.Int64) else "float" if isinstance(dtype, pl.Float64) else "datetime"


def _to_number(text: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Numbers read as text back to numbers; a value that is no number of that kind becomes null."""
    as_float = text.cast(pl.Float64, strict=False)
    if isinstance(dtype, pl.Float64):
        return as_float
    exact = text.cast(pl.Int64, strict=False)
    whole = as_float.is_not_null() & (as_float == as_float.floor()) & (as_float.abs() < 2.0**63)
    return exact.fill_null(pl.when(whole).then(as_float).otherwise(None).cast(pl.Int64, strict=False))


def to_utc(text: pl.Series) -> pl.Series:
    """Timestamps as aware UTC datetimes: the writer's format in bulk, any other one by `parse_timestamp`."""
    fast = text.str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC", strict=False)
    missed = fast.is_null() & text.is_not_null()
    if not missed.any():
        return fast
    values = fast.to_list()
    for i in missed.arg_true().to_list():
        values[i] = parse_timestamp(text[i])
    return pl.Series(text.name, values, dtype=pl.Datetime("us", "UTC"))


def judge_lines(
    lines: pl.DataFrame,
    *,
    schema: pl.Schema,
    source: Source,
    report: LoadReport,
    raw: Callable[[list[int]], dict[int, bytes]],
    last_unterminated: int | None = None,
    events: Sequence[str] | None = None,
    seen: Seen | None = None,
) -> pl.DataFrame:
    """Rows of the schema (with their line number first) for a frame of (line number, text or null).

    `seen` holds the lines of the same file read before these (repeats are dropped and reported).
    """
    return _judge_decoded(
        decoded_rows(lines.filter(~blank_line(pl.col(LINE))), schema),
        schema=schema,
        source=source,
        report=report,
        raw=raw,
        last_unterminated=last_unterminated,
        events=events,
        seen=seen,
    )


def _judge_decoded(
    rows: pl.DataFrame,
    *,
    schema: pl.Schema,
    source: Source,
    report: LoadReport,
    raw: Callable[[list[int]], dict[int, bytes]],
    last_unterminated: int | None,
    events: Sequence[str] | None,
    seen: Seen | None,
) -> pl.DataFrame:
    """`judge_lines` after the bulk decoding (`_decoded`): repeats, odd lines, conversion, rejections."""
    odd = rows.filter(pl.col(ODD).is_not_null())
    rows = rows.filter(pl.col(ODD).is_null())
    rows = (seen or Seen()).drop_repeats(rows, source=source, report=report, events=events)
    extra = []
    if odd.height:
        numbers = odd.get_column(NUMBER).to_list()
        extra.append(_judged(numbers, raw(numbers), schema, source, report, last_unterminated, events))
    frame = settle(
        pl.concat([rows, *extra], how="diagonal_relaxed") if extra else rows,
        schema,
        source=source,
        report=report,
        text_of=raw,
        events=events,
    )
    return frame.sort(NUMBER) if extra else frame  # rows are in line order; repaired ones are not


def decoded_rows(lines: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """`lazy_rows` over lines in memory (non-blank), decoded by polars' NDJSON reader when it reads them alike.

    The NDJSON reader is several times faster than `str.json_decode`, but where
    text belongs it takes an object or a list as its JSON text instead of
    refusing it. So it is used only when every field is decoded as text, and
    its rows are kept only when no value starts like an object or a list (and
    there is one row per line); otherwise `str.json_decode` decodes the lines.
    """
    if lines.height and all(t == pl.String for t in _decoded_schema(schema).values()):
        fast = _ndjson_rows(lines, schema)
        if fast is not None:
            return fast
    return _decoded(lines.drop(ODD, strict=False), schema)


def _ndjson_rows(lines: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame | None:
    line = pl.col(LINE)
    marked = lines if lines.schema.get(ODD) == pl.Boolean else lines.with_columns(odd_line(line).alias(ODD))
    prepared = marked.lazy().select(
        pl.col(NUMBER),
        pl.when(pl.col(ODD)).then(pl.lit("{}")).otherwise(line).alias(LINE),
        pl.when(pl.col(ODD)).then(line.fill_null("")).alias(ODD),
        pl.when(~pl.col(ODD)).then(line.hash()).alias(HASH),
    ).collect()
    text = prepared.get_column(LINE).str.join("\n").cast(pl.Binary).item()
    try:
        decoded = pl.read_ndjson(text, schema=_decoded_schema(schema))
    except pl.exceptions.PolarsError:
        return None
    if decoded.height != prepared.height:
        return None
    nested = pl.any_horizontal(pl.all().str.starts_with("{") | pl.all().str.starts_with("["))
    if decoded.select(nested.any()).item():
        return None  # an object or a list where text belongs: `str.json_decode` refuses it, as the rules do
    return pl.concat([prepared.select(NUMBER), decoded, prepared.select(ODD, HASH)], how="horizontal")


def _decoded(lines: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """`lazy_rows` over lines in memory; a run polars refuses is halved until each refused line is alone."""
    try:
        return lazy_rows(lines.lazy(), schema).collect()
    except pl.exceptions.PolarsError:
        if lines.height == 1:
            # Judged alone by `_judged`: passed on as an odd line.
            return lines.select(pl.col(NUMBER), pl.col(LINE).fill_null("").alias(ODD))
    mid = lines.height // 2
    return pl.concat([_decoded(lines[:mid], schema), _decoded(lines[mid:], schema)], how="diagonal_relaxed")


def _judged(
    numbers: list[int],
    raw: dict[int, bytes],
    schema: pl.Schema,
    source: Source,
    report: LoadReport,
    last_unterminated: int | None,
    events: Sequence[str] | None,
) -> pl.DataFrame:
    """Odd lines one by one: rejected with a reason, or repaired and decoded like any other line."""
    repaired: list[int] = []
    texts: list[str] = []
    for number in numbers:
        line = raw.get(number, b"")
        verdict = judge_line(line, last=number == last_unterminated)
        if verdict.record is None:
            event = _event_of(line)
            if event is None or events is None or event in events:
                report.add_corrupt(source, number, verdict.reason or "unreadable", line)
            continue
        for note in verdict.notes:
            report.add_note(source, number, note)
        repaired.append(number)
        # U+FFFD only ever stands inside a string: escaped, the repaired line is not odd again.
        texts.append(orjson.dumps(verdict.record).decode().replace("\ufffd", "\\ufffd"))
    if not repaired:
        return pl.DataFrame(schema={NUMBER: pl.Int64, ODD: pl.String})
    lines = pl.DataFrame({NUMBER: repaired, LINE: texts}, schema={NUMBER: pl.Int64, LINE: pl.String})
    out = []
    for one in lines.iter_slices(1):
        try:
            out.append(lazy_rows(one.lazy(), schema).collect().filter(pl.col(ODD).is_null()))
        except pl.exceptions.PolarsError as exc:
            report.add_corrupt(source, one[0, NUMBER], f"unreadable ({_short(exc)})", raw.get(one[0, NUMBER], b""))
    return pl.concat(out, how="diagonal_relaxed") if out else pl.DataFrame(schema={NUMBER: pl.Int64})


def _event_of(line: bytes) -> str | None:
    """The event of a rejected line when it can still be read (to leave other queries' lines alone)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    event = value.get(f.EVENT) if isinstance(value, dict) else None
    return event if isinstance(event, str) else None


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def lines_frame(block: bytes, first_line: int) -> pl.DataFrame:
    """A block of whole lines as (line number, text or null when not UTF-8).

    polars checks and splits the block without the GIL, so a block decoded on
    another thread does not wait for this one.
    """
    try:
        text = pl.Series(LINE, [block], dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.ComputeError:
        text = pl.Series(LINE, [_lossy_lines(block)], dtype=pl.Binary).cast(pl.String)
    column = text.str.split("\n").explode()
    if block.endswith(b"\n"):
        column = column.head(len(column) - 1)
    frame = pl.DataFrame([column]).with_row_index(NUMBER, offset=first_line)
    return frame.with_columns(pl.col(NUMBER).cast(pl.Int64))


def _lossy_lines(block: bytes) -> bytes:
    """`block` with each line that is not UTF-8 read lossily (U+FFFD), every other line as it is.

    Such a line is odd (`odd_line`), so it is judged alone from its raw bytes,
    never from this text. Only the bad lines are decoded by Python's error
    handler; the rest is checked at memory speed.
    """
    pieces: list[bytes] = []
    view = memoryview(block)
    pos = 0
    while pos < len(block):
        try:
            codecs.utf_8_decode(view[pos:], "strict", True)
        except UnicodeDecodeError as exc:
            start = block.rfind(b"\n", pos, pos + exc.start) + 1 or pos
            end = block.find(b"\n", pos + exc.end)
            end = len(block) if end < 0 else end
            pieces.append(block[pos:start])
            pieces.append(block[start:end].decode("utf-8", errors="replace").encode())
            pos = end
            continue
        pieces.append(block[pos:])
        break
    return b"".join(pieces)


@dataclass
class DecodedBlock:
    """A block of lines split and decoded in bulk (`decode_block`), not yet judged (`judge_block`).

    Decoding touches no shared state, so blocks can be decoded on other threads
    while the one before is judged, in order, on the reading thread.
    """

    first_line: int
    block: bytes
    lines: int
    rows: pl.DataFrame
    unterminated: int | None


def decode_block(
    block: bytes, *, first_line: int, schema: pl.Schema, events: Sequence[str] | None = None
) -> DecodedBlock:
    """Split a block of whole lines and decode them in bulk; lines that cannot be of `events` are skipped."""
    lines = lines_frame(block, first_line)
    count = lines.height
    if events:
        lines = lines.filter(may_hold(pl.col(LINE), events) | odd_line(pl.col(LINE)))
    unterminated = first_line + count - 1 if count and not block.endswith(b"\n") else None
    rows = decoded_rows(lines.filter(~blank_line(pl.col(LINE))), schema)
    return DecodedBlock(first_line, block, count, rows, unterminated)


def judge_block(
    decoded: DecodedBlock,
    *,
    source: Source,
    schema: pl.Schema,
    report: LoadReport,
    events: Sequence[str] | None = None,
    seen: Seen | None = None,
) -> pl.DataFrame:
    """The rows of a decoded block, every bad line and repeat reported; blocks of a file go in order."""
    first_line = decoded.first_line
    report.lines += decoded.lines
    block = decoded.block
    ends: list[np.ndarray[Any, np.dtype[np.intp]]] = []  # where lines end, found only if a bad line needs its bytes

    def raw(numbers: list[int]) -> dict[int, bytes]:
        if not ends:  # numpy finds the newlines at memory speed, without a bytes object per line
            ends.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10))
        found = ends[0]
        out = {}
        for n in numbers:
            i = n - first_line
            start = int(found[i - 1]) + 1 if i > 0 else 0
            out[n] = block[start : int(found[i]) if i < len(found) else len(block)]
        return out

    since = report.mark()
    frame = _judge_decoded(
        decoded.rows,
        schema=schema,
        source=source,
        report=report,
        raw=raw,
        last_unterminated=decoded.unterminated,
        events=events,
        seen=seen,
    )
    report.in_line_order(since)
    return frame.drop(NUMBER)


def parse_block(
    block: bytes,
    *,
    first_line: int,
    source: Source,
    schema: pl.Schema,
    report: LoadReport,
    events: Sequence[str] | None = None,
    seen: Seen | None = None,
) -> pl.DataFrame:
    """Judge a block of whole lines (only the file's last block can end without a newline: a torn line).

    Pass the same `seen` for every block of one file, so a line repeated in a later block is found.
    """
    decoded = decode_block(block, first_line=first_line, schema=schema, events=events)
    return judge_block(decoded, source=source, schema=schema, report=report, events=events, seen=seen)


def text_column(raw: list[bytes], block: bytes) -> pl.Series:
    """The lines of `block` (split into `raw`) as text; a line that is not UTF-8 is null, never an error."""
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:  # rare: only then is each line decoded on its own
        return pl.Series(LINE, [_utf8_or_none(line) for line in raw], dtype=pl.String)
    return pl.Series(LINE, raw, dtype=pl.Binary).cast(pl.String)


def _utf8_or_none(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None
