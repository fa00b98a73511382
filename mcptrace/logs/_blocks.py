"""A log file judged block by block on every core, the blocks' answers handed back in file order.

Each block is split into lines by polars' CSV reader (one column, no quoting),
its candidate lines picked by literal searches, decoded and judged by the
reading rules (`_parse`), and reduced by the caller's `reduce` (a filter, a
per-tool partial sum) on a worker thread: polars releases the GIL, so blocks
run in parallel. The one judgement that depends on earlier blocks, the exact
repeat (`_parse.Seen`), is settled on the calling thread in file order: a
block that repeats none of the earlier blocks' lines keeps the worker's
verdict; one that does (rare: duplicated lines) is judged again there against
everything seen before. So the answer depends neither on where the blocks are
cut nor on how many run at once.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import polars as pl

from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._parse import (
    LINE,
    NUMBER,
    ODD,
    DecodedBlock,
    Seen,
    blank_line,
    decode_block,
    decoded_rows,
    judge_block,
    may_hold,
    odd_line,
)
from mcptrace.logs._sources import Source, iter_blocks

__all__ = ["BLOCK_BYTES", "judged_blocks"]

#: Bytes one worker judges at a time: with a block or two waiting per worker, what bounds a
#: query's memory besides its answer.
BLOCK_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


@dataclass
class _Judged(Generic[T]):
    decoded: DecodedBlock
    report: LoadReport
    fresh: Seen
    answer: T


def judged_blocks(
    source: Source,
    *,
    schema: pl.Schema,
    report: LoadReport,
    reduce: Callable[[pl.DataFrame], T],
    events: Sequence[str] | None = None,
    seen: Seen | None = None,
    block_bytes: int = BLOCK_BYTES,
    workers: int | None = None,
) -> Iterator[tuple[T, int]]:
    """(`reduce(rows of a block)`, the block's size in bytes) for each block of `source`, in order.

    The rows are those `_parse.judge_block` gives (typed by `schema`, in line
    order); every bad line and repeat goes to `report`, in line order. `seen`
    holds the lines of this file judged before (none by default).
    """
    seen = Seen() if seen is None else seen
    n = workers or _cpus()

    def work(first_line: int, block: bytes) -> _Judged[T]:
        decoded = _decode(block, first_line, schema, events)
        own, fresh = LoadReport(), Seen()
        rows = judge_block(decoded, source=source, schema=schema, report=own, events=events, seen=fresh)
        return _Judged(decoded, own, fresh, reduce(rows))

    def settled(judged: _Judged[T], next_line: int | None) -> T:
        decoded = judged.decoded
        if next_line is None:  # the last block: its lines counted here
            next_line = decoded.first_line + decoded.block.count(b"\n") + (not decoded.block.endswith(b"\n"))
        if decoded.first_line + decoded.lines != next_line:  # split otherwise than by its newlines: split again
            decoded = decode_block(decoded.block, first_line=decoded.first_line, schema=schema, events=events)
        elif not seen.knows_any(judged.fresh):
            seen.absorb(judged.fresh)
            report.merge(judged.report)
            return judged.answer
        rows = judge_block(decoded, source=source, schema=schema, report=report, events=events, seen=seen)
        return reduce(rows)

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="mcptrace-judge") as pool:
        pending: deque[tuple[Future[_Judged[T]], int, int]] = deque()
        try:
            for first_line, block in iter_blocks(source, block_size=block_bytes):
                pending.append((pool.submit(work, first_line, block), first_line, len(block)))
                del block
                if len(pending) > n:
                    future, _, size = pending.popleft()
                    yield settled(future.result(), pending[0][1]), size
            while pending:
                future, _, size = pending.popleft()
                yield settled(future.result(), pending[0][1] if pending else None), size
        finally:
            for future, _, _ in pending:
                future.cancel()


def _decode(block: bytes, first_line: int, schema: pl.Schema, events: Sequence[str] | None) -> DecodedBlock:
    """`_parse.decode_block` in one polars query, the lines split by polars' CSV reader.

    Its rows are the lines when its separator (a control character JSON never
    holds unescaped) and a carriage return (which it drops before a newline)
    are absent; an empty line comes back null and is made empty again, and bytes
    that are not UTF-8 become U+FFFD, so such a line is odd and judged from its
    raw bytes. The caller checks that the rows were as many as the lines.
    """
    if b"\x1f" in block or b"\r" in block:
        return decode_block(block, first_line=first_line, schema=schema, events=events)
    line = pl.col(LINE)
    keep = ~blank_line(line)
    if events:
        keep = keep & (may_hold(line, events) | pl.col(ODD))
    lines = (
        pl.scan_csv(
            block,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            schema={LINE: pl.String},
            encoding="utf8-lossy",
        )
        .select(pl.col(LINE).fill_null(""))
        .with_row_index(NUMBER, offset=first_line)
        .with_columns(
            pl.col(NUMBER).cast(pl.Int64),
            odd_line(line, ascii=block.isascii()).alias(ODD),
            pl.len().alias(_TOTAL),
        )
        .filter(keep)
        .collect()
    )
    count = lines.item(0, _TOTAL) if lines.height else block.count(b"\n") + (not block.endswith(b"\n"))
    unterminated = first_line + count - 1 if count and not block.endswith(b"\n") else None
    rows = decoded_rows(lines.drop(_TOTAL), schema)
    return DecodedBlock(first_line, block, count, rows, unterminated)


_TOTAL = "_total"


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
