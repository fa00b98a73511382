"""The index's request lookup table: raw lines sorted by request id, in zstd blocks.

The Parquet dataset answers analyses, but reading it means importing polars or
pyarrow, which alone costs more than a whole `rg` run. Next to it the index
keeps this small store: the original lines sorted by `mcp_request_id`, cut
into compressed blocks, and a sparse table of each block's first id. A lookup
bisects the table, decompresses one or two blocks and decodes only the lines
of the request: no heavy import, a few milliseconds.

Layout: `chains-NNNN.bin` holds the blocks back to back; `chains-NNNN.idx` has
one line per block, `first_id <TAB> offset <TAB> length`. Large logs are
indexed in parts (each sorted on its own), so a lookup bisects every part.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

STORE_SUFFIX = ".bin"
TABLE_SUFFIX = ".idx"
BLOCK_BYTES = 256 * 1024


def write_store(directory: Path, rows: Iterable[tuple[str, bytes]], *, part: int = 0) -> int:
    """Write (request id, raw line) pairs, already sorted by id, as one part; returns its block count."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3)
    blocks = 0
    name = f"chains-{part:04d}"
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
            if size >= BLOCK_BYTES and rid != last:
                flush()
            if not pending:
                first = rid
            line = line if line.endswith(b"\n") else line + b"\n"
            pending.append(rid.encode() + b"\t" + line)
            size += len(line)
            last = rid
        flush()
    return blocks


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

    ids, spans = read_table(table)
    # The block before the first one that starts with this id may hold its first lines.
    i = max(bisect.bisect_left(ids, request_id) - 1, 0)
    key = request_id.encode() + b"\t"
    out: list[dict[str, Any]] = []
    decompressor = zstandard.ZstdDecompressor()
    with open(table.with_suffix(STORE_SUFFIX), "rb") as fh:
        while i < len(ids) and (ids[i] <= request_id):
            offset, length = spans[i]
            fh.seek(offset)
            block = decompressor.decompress(fh.read(length))
            pos = 0 if block.startswith(key) else block.find(b"\n" + key) + 1
            while pos > 0 or (pos == 0 and block.startswith(key)):
                end = block.find(b"\n", pos)
                end = len(block) if end < 0 else end
                # A corrupt line was counted when the index was built; it is not a record.
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(block[pos + len(key) : end]))
                if not block.startswith(key, end + 1):
                    break
                pos = end + 1
            i += 1
    return out


def lookup_in_store(sources: Sequence[Any], request_id: str) -> list[dict[str, Any]] | None:
    """Records from a fresh index for these sources, or None when there is no fresh index."""
    from mcptrace.analysis._manifest import fresh_index_dir
    from mcptrace.analysis._search import record_time

    directories = fresh_index_dir(sources)
    if directories is None:
        return None
    records = [r for d in directories for r in lookup_lines(d, request_id)]
    records.sort(key=record_time)
    return records
