"""Find the lines that mention a value without parsing the rest: a byte search over the raw logs.

Looking up one request in gigabytes of logs is a needle search: the bytes are
scanned for the quoted id first (on every CPU, see `_scan`), and only the lines
that contain it are decoded. Memory stays bounded by the matching lines. This
module imports neither polars nor pyarrow, so `mcptrace chain` starts fast.
"""

from __future__ import annotations

import contextlib
import difflib
import mmap
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace.logs._judge import judge_value, parse_timestamp
from mcptrace.logs._scan import find_all, lines_at
from mcptrace.logs._sources import Source, iter_blocks

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class SearchResult:
    """Matching records in time order, plus what was searched (for helpful errors)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    bytes_searched: int = 0
    corrupt: list[str] = field(default_factory=list)


def iter_matching_lines(source: Source, needle: bytes) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of every line of `source` that contains `needle`."""
    if source.compression is None:
        with open(source.path, "rb") as fh:
            try:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                return
            with mm:
                if hasattr(mm, "madvise"):
                    mm.madvise(mmap.MADV_SEQUENTIAL)
                pos = mm.find(needle)
                while pos >= 0:
                    start = mm.rfind(b"\n", 0, pos) + 1
                    end = mm.find(b"\n", pos)
                    end = len(mm) if end < 0 else end
                    yield start, mm[start:end]
                    pos = mm.find(needle, end)
        return
    offset = 0
    for _, block in iter_blocks(source):
        pos = block.find(needle)
        while pos >= 0:
            start = block.rfind(b"\n", 0, pos) + 1
            end = block.find(b"\n", pos)
            end = len(block) if end < 0 else end
            yield offset + start, block[start:end]
            pos = block.find(needle, end)
        offset += len(block)


def find_lines(source: Source, needle: bytes) -> list[tuple[int, bytes]]:
    """(byte offset, line) of every line of `source` that contains `needle`, all at once.

    Plain files are searched in memory-mapped windows on every CPU; compressed ones are
    decompressed block by block.
    """
    if source.compression is None:
        try:
            return lines_at(source.path, find_all(source.path, needle))
        except OSError as exc:
            raise LogReadError(f"cannot read {source.name}: {exc.strerror or exc}") from None
    return list(iter_matching_lines(source, needle))


def line_number(source: Source, offset: int) -> int:
    """1-based line number of the line starting at `offset` (a full read: only for error reports)."""
    count = 1
    done = 0
    for _, block in iter_blocks(source):
        if done + len(block) > offset:
            return count + block.count(b"\n", 0, offset - done)
        count += block.count(b"\n")
        done += len(block)
    return count


def search_field(sources: Sequence[Source], key: str, value: str) -> SearchResult:
    """Every record whose `key` equals `value`, in time order (stable within equal timestamps)."""
    needle = orjson.dumps(value)
    result = SearchResult(files=[s.name for s in sources])
    for source in sources:
        with contextlib.suppress(OSError):
            result.bytes_searched += source.path.stat().st_size
        for offset, line in find_lines(source, needle):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                result.corrupt.append(f"{source.name}:{line_number(source, offset)}: bad JSON ({exc})")
                continue
            if not (isinstance(record, dict) and _matches(record.get(key), value)):
                continue
            verdict = judge_value(record)  # the same rules as every other reader
            if verdict.record is None:
                result.corrupt.append(f"{source.name}:{line_number(source, offset)}: {verdict.reason}")
                continue
            result.records.append(verdict.record)
    result.records.sort(key=record_time)
    return result


def _matches(found: Any, value: str) -> bool:
    return found == value or (found is not None and not isinstance(found, str) and str(found) == value)


def record_time(record: dict[str, Any]) -> datetime:
    """The record's timestamp as an aware UTC datetime, by the reading rules (the epoch when unreadable)."""
    return parse_timestamp(record.get(f.TIMESTAMP)) or _EPOCH


def count_lines(sources: Sequence[Source]) -> int:
    """Lines in all sources (a full read: only for error reports).

    Plain files are counted by polars' row counter on every core (imported
    here, on the error path only); compressed ones block by block.
    """
    total = 0
    for source in sources:
        if source.compression is None:
            from mcptrace.logs._lines import count_lines as count_file

            total += count_file(source.path)
        else:
            total += sum(block.count(b"\n") for _, block in iter_blocks(source))
    return total


def close_ids(sources: Sequence[Source], wanted: str, *, limit: int = 5) -> list[str]:
    """Request ids in the logs that look like `wanted` (for "did you mean").

    One more pass over the logs: the ids that share the shortest prefix tried are
    collected, then the longest prefix that any of them shares wins.
    """
    prefixes = list(dict.fromkeys(wanted[:n] for n in (len(wanted) - 2, 10, 8, 6) if 0 < n < len(wanted)))
    if not prefixes:
        return []
    shortest = min(prefixes, key=len)
    pattern = re.compile(
        b'"' + f.REQUEST_ID.encode() + b'":"(' + re.escape(shortest.encode()) + b'[^"]{0,200})"'
    )
    found: set[str] = set()
    for source in sources:
        try:
            lines = find_lines(source, b'"' + shortest.encode())
        except LogReadError:
            continue
        for _, line in lines:
            for m in pattern.finditer(line):
                found.add(m.group(1).decode("utf-8", "replace"))
            if len(found) > _MAX_CANDIDATES:
                break
    for prefix in sorted(prefixes, key=len, reverse=True):
        candidates = sorted(i for i in found if i.startswith(prefix))
        if candidates:
            return difflib.get_close_matches(wanted, candidates[:_MAX_COMPARED], n=limit, cutoff=0.0)
    return []


#: Ids collected as candidates for a suggestion, and how many of them difflib compares at most.
_MAX_CANDIDATES = 200_000
_MAX_COMPARED = 10_000
