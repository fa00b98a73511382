"""The index's request lookup table: raw lines sorted by request id, in zstd blocks.

The Parquet dataset answers analyses, but reading it means importing polars or
pyarrow, which alone costs more than a whole `rg` run. Next to it the index
keeps this small store: the original lines sorted by `mcp_request_id`, cut
into compressed blocks, and a sparse table of each block's first id. A lookup
bisects the table, decompresses one or two blocks and decodes only the lines
of the request: no heavy import, a few milliseconds.

Layout: `chains-all.bin` holds the blocks back to back; `chains-all.idx` has
one line per block, `first_id <TAB> offset <TAB> length`. A log is indexed in
sorted runs (`chains-NNNNNN`), merged into `all` at the end; a lookup bisects
every part it finds, so a store left in parts still answers.
"""

from __future__ import annotations

import heapq
import mmap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mcptrace.logs._judge import judge_line
from mcptrace.logs._manifest import fresh_index_dir
from mcptrace.logs._search import record_time

STORE_SUFFIX = ".bin"
TABLE_SUFFIX = ".idx"
BLOCK_BYTES = 256 * 1024
#: Block size of the parts that are merged (each merged part holds one block in memory).
PART_BLOCK_BYTES = 64 * 1024
#: The part name a merged store is written under.
MERGED_PART = "all"


def write_store(
    directory: Path, rows: Iterable[tuple[str, bytes]], *, part: int | str = 0, block_bytes: int = BLOCK_BYTES
) -> int:
    """Write (request id, raw line) pairs, already sorted by id, as one part; returns its block count."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3)
    blocks = 0
    name = f"chains-{part:06d}" if isinstance(part, int) else f"chains-{part}"
    with (
        open(directory / (name + STORE_SUFFIX), "wb") as data,
        open(directory / (name + TABLE_SUFFIX), "w") as table,
    ):
        pending: list[bytes] = []
        size = 0
        first = ""
        last = ""
        offset = 0

        def flush() -> None:
            nonlocal pending, size, offset, blocks
            if not pending:
                return
            packed = compressor.compress(b"".join(pending))
            data.write(packed)
            table.write(f"{first}\t{offset}\t{len(packed)}\n")
            offset += len(packed)
            blocks += 1
            pending, size = [], 0

        for rid, line in rows:
            # Never split one request across blocks: a lookup then reads exactly one block
            # unless the request itself is larger than a block.
            if size >= block_bytes and rid != last:
                flush()
            if not pending:
                first = rid
            line = line if line.endswith(b"\n") else line + b"\n"
            pending.append(rid.encode() + b"\t" + line)
            size += len(line)
            last = rid
        flush()
    return blocks


def iter_part(table: Path) -> Iterator[tuple[str, bytes]]:
    """(request id, raw line) pairs of one part, in its (sorted) order."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    _, spans = read_table(table)
    with open(table.with_suffix(STORE_SUFFIX), "rb") as fh:
        for offset, length in spans:
            fh.seek(offset)
            for row in decompressor.decompress(fh.read(length)).splitlines():
                rid, _, line = row.partition(b"\t")
                yield rid.decode(), line


#: Parts merged at once: a merge holds one block of each, so this bounds its memory.
MAX_FAN_IN = 256


def merge_parts(directory: Path, *, fan_in: int = MAX_FAN_IN) -> None:
    """Merge the sorted parts of a store into one, so a lookup reads a single block.

    A streaming k-way merge: memory stays bounded by one block per part (write
    the parts with `PART_BLOCK_BYTES`). More than `fan_in` parts (a log of tens
    of GB) are first merged in groups of `fan_in`, so the memory does not grow
    with the log. Equal ids keep the order of the parts (which is the order of
    the log).
    """
    tables = sorted(directory.glob("chains-*" + TABLE_SUFFIX))
    if len(tables) < 2:
        return
    level = 0
    while len(tables) > fan_in:
        level += 1
        groups = [tables[i : i + fan_in] for i in range(0, len(tables), fan_in)]
        for n, group in enumerate(groups):
            _merge(group, directory, f"l{level}-{n:06d}", block_bytes=PART_BLOCK_BYTES)
        tables = sorted(directory.glob("chains-*" + TABLE_SUFFIX))
    _merge(tables, directory, MERGED_PART, block_bytes=BLOCK_BYTES)


def _merge(tables: list[Path], directory: Path, name: str, *, block_bytes: int) -> None:
    merged = heapq.merge(*(iter_part(t) for t in tables), key=lambda row: row[0])
    write_store(directory, merged, part=name, block_bytes=block_bytes)
    for t in tables:
        t.unlink()
        t.with_suffix(STORE_SUFFIX).unlink()


def read_table(table_path: Path) -> tuple[list[str], list[tuple[int, int]]]:
    ids: list[str] = []
    spans: list[tuple[int, int]] = []
    with open(table_path) as fh:
        for row in fh:
            rid, offset, length = row.rstrip("\n").split("\t")
            ids.append(rid)
            spans.append((int(offset), int(length)))
    return ids, spans


def lookup_lines(directory: Path, request_id: str) -> list[dict[str, Any]]:
    """The records of one request from every part of the store (empty when it has none)."""
    out: list[dict[str, Any]] = []
    for table in sorted(directory.glob("chains-*" + TABLE_SUFFIX)):
        out.extend(_lookup_part(table, request_id))
    return out


def _lookup_part(table: Path, request_id: str) -> list[dict[str, Any]]:
    import zstandard

    key = request_id.encode() + b"\t"
    out: list[dict[str, Any]] = []
    decompressor = zstandard.ZstdDecompressor()
    with open(table.with_suffix(STORE_SUFFIX), "rb") as fh:
        for offset, length in _candidate_blocks(table, request_id):
            fh.seek(offset)
            block = decompressor.decompress(fh.read(length))
            pos = 0 if block.startswith(key) else block.find(b"\n" + key) + 1
            while pos > 0 or (pos == 0 and block.startswith(key)):
                end = block.find(b"\n", pos)
                end = len(block) if end < 0 else end
                # A rejected line was counted when the index was built; it is not a record.
                verdict = judge_line(block[pos + len(key) : end])
                if verdict.record is not None:
                    out.append(verdict.record)
                if not block.startswith(key, end + 1):
                    break
                pos = end + 1
    return out


def _candidate_blocks(table: Path, request_id: str) -> list[tuple[int, int]]:
    """(offset, length) of the blocks that may hold `request_id`: a binary search over the table file.

    The table is searched in place (memory-mapped), so a lookup costs a few
    reads whatever the size of the log: the block before the first block
    starting at or after the id, and every block that starts with the id.
    """
    want = request_id.encode()
    with open(table, "rb") as fh:
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty table
            return []
        with mm:
            lo, hi = 0, len(mm)
            while lo < hi:
                start = mm.rfind(b"\n", 0, (lo + hi) // 2) + 1
                start = max(start, lo)
                end = mm.find(b"\n", start)
                end = len(mm) if end < 0 else end
                if mm[start : mm.find(b"\t", start)] < want:
                    lo = end + 1
                else:
                    hi = start
            pos = mm.rfind(b"\n", 0, lo - 1) + 1 if lo > 0 else 0
            found: list[tuple[int, int]] = []
            while pos < len(mm):
                end = mm.find(b"\n", pos)
                end = len(mm) if end < 0 else end
                first, offset, length = mm[pos:end].split(b"\t")
                if first > want:
                    break
                found.append((int(offset), int(length)))
                pos = end + 1
            return found


def lookup_in_store(sources: Sequence[Any], request_id: str) -> list[dict[str, Any]] | None:
    """Records from a fresh index for these sources, or None when there is no fresh index."""
    directories = fresh_index_dir(sources)
    if directories is None:
        return None
    records = [r for d in directories for r in lookup_lines(d, request_id)]
    records.sort(key=record_time)
    return records
