"""`mcptrace index`: Parquet (zstd) beside the logs, so repeated questions skip the JSON.

Layout of an index directory (see `_manifest` for where it lives):

    data/date=2026-11-25/<segment>-<n>.parquet  rows in log order, a row group per block (see `_dataset`)
    segments/<segment>/chains.bin|chains.idx     raw lines by request id (see `_chainstore`)
    segments/<segment>/tool_durations.f8         per-tool latencies (see `_toolsummary`)
    manifest.json                                segments, line counts, corrupt lines

`data/` is a hive-partitioned dataset: DuckDB, Spark or Trino read it as it is
(`read_parquet('data/**/*.parquet', hive_partitioning=true)`). One segment per
source file: after a rotation only the new file is indexed again, and the
segments of other logs in the same folder are kept.

A source is read in blocks of `BLOCK_BYTES` and each block goes straight to
the Parquet files, the chain store's sorted runs and the per-tool summary, so
the memory an index takes depends on the block size, not on the log's size.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from mcptrace import _fields as f
from mcptrace.logs._chainstore import PART_BLOCK_BYTES, merge_parts, write_store
from mcptrace.logs._dataset import DayFiles, segment_files
from mcptrace.logs._loadreport import CorruptLine, LoadReport
from mcptrace.logs._manifest import (
    fresh_segments,
    index_dir,
    read_manifest,
    segment_key,
    write_manifest,
)
from mcptrace.logs._parse import Seen, parse_block, read_schema, text_column
from mcptrace.logs._sources import Paths, Progress, Source, _rotated_siblings, iter_blocks, resolve_sources
from mcptrace.logs._toolsummary import MANIFEST_KEY, SummaryWriter, summary_input

#: JSON bytes parsed at a time. The parser holds several times a block while it works, so this
#: is what bounds the memory of `mcptrace index`; larger blocks are hardly faster.
BLOCK_BYTES = 2 * 1024 * 1024
#: Raw lines gathered before they are sorted into one run of the chain store (merged at the end).
RUN_BYTES = 8 * 1024 * 1024
_ID_IN_LINE = r'"' + f.REQUEST_ID + r'"\s*:\s*"([^"]+)"'


@dataclass
class IndexReport:
    directory: Path
    indexed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    rows: int = 0
    #: Blocks read to index the files of `indexed` (how finely the index streamed).
    blocks: int = 0
    corrupt_count: int = 0
    corrupt: list[CorruptLine] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return LoadReport(corrupt_count=self.corrupt_count, corrupt=self.corrupt).summary()


def build_index(
    paths: Paths = None, *, progress: Progress | None = None, block_bytes: int = BLOCK_BYTES
) -> IndexReport:
    """Index every source that has no current segment; drop segments whose file is gone.

    Segments of files that still exist but were not asked for (another log in
    the same folder) are kept.
    """
    sources = [s for s in resolve_sources(paths) if s.name != "<stdin>"]
    if not sources:
        raise ValueError("nothing to index (stdin cannot be indexed)")
    directory = index_dir(sources)
    directory.mkdir(parents=True, exist_ok=True)
    segments: dict[str, Any] = dict((read_manifest(directory) or {}).get("segments", {}))
    report = IndexReport(directory)
    keys = [segment_key(s.path) for s in sources]
    total = sum(s.path.stat().st_size for s in sources)
    done = 0
    built: dict[str, Any] = {}
    for source, key in zip(sources, keys, strict=True):
        if key in segments:
            report.reused.append(source.name)
            built[key] = {**segments[key], "source": source.name, "path": str(source.path.resolve())}
        else:
            size = source.path.stat().st_size

            def step(read: int, before: int = done, size: int = size) -> None:
                if progress is not None:
                    progress(before + min(read, size), total)  # a compressed file reads more than its size

            built[key], blocks = _index_source(source, directory, key, block_bytes=block_bytes, on_read=step)
            report.indexed.append(source.name)
            report.blocks += blocks
        done += source.path.stat().st_size
        if progress is not None:
            progress(done, total)
    # Another `mcptrace index` may have added segments meanwhile: start again from the manifest as it is now.
    segments = dict((read_manifest(directory) or {}).get("segments", {}))
    segments.update(built)
    for stale in [k for k in segments if k not in built and not _still_there(k, segments[k])]:
        _remove_segment(directory, stale)
        del segments[stale]
    write_manifest(directory, {"segments": segments})
    for source, key in zip(sources, keys, strict=True):
        info = segments[key]
        report.rows += info["rows"]
        report.corrupt_count += info["corrupt_count"]
        report.corrupt.extend(CorruptLine(**{**c, "file": source.name}) for c in info["corrupt"])
    return report


def _still_there(key: str, info: dict[str, Any]) -> bool:
    """Whether the file a segment was built from still exists as it was (perhaps rotated to `x.log.N`)."""
    recorded = info.get("path")
    if not recorded:
        return False
    path = Path(recorded)
    for candidate in [path, *_rotated_siblings(path)]:
        try:
            if segment_key(candidate) == key:
                return True
        except OSError:
            continue
    return False


def _index_source(
    source: Source, directory: Path, key: str, *, block_bytes: int, on_read: Callable[[int], None]
) -> tuple[dict[str, Any], int]:
    """Index one file block by block; returns its manifest entry and the number of blocks read.

    `on_read` is told the bytes read so far after each block.

    Whatever happens (a damaged file, Ctrl-C), a segment is either complete or absent.
    """
    schema = read_schema()
    load_report = LoadReport(files=[source.name])
    store = directory / "segments" / key
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    days = DayFiles(directory, key)
    summary = SummaryWriter(store)
    runs = _Runs(store)
    rows = 0
    blocks = 0
    read = 0
    seen = Seen()  # exact repeats of a line are counted once, across blocks
    try:
        for first_line, block in iter_blocks(source, block_size=block_bytes):
            blocks += 1
            read += len(block)
            data = parse_block(
                block, first_line=first_line, source=source, schema=schema, report=load_report, seen=seen
            )
            rows += data.height
            days.add(data)
            summary.add(summary_input(data))
            del data
            runs.add(block)
            del block
            on_read(read)
        runs.close()
        tools = summary.finish()
        days.close()
    except BaseException:
        days.abort()
        shutil.rmtree(store, ignore_errors=True)
        raise
    entry = {
        MANIFEST_KEY: tools,
        "source": source.name,
        "path": str(source.path.resolve()),
        "rows": rows,
        **load_report.segment_entry(),
    }
    return entry, blocks


class _Runs:
    """The chain store's input: (request id, raw line) of each block, sorted and written in runs of `RUN_BYTES`."""

    def __init__(self, store: Path) -> None:
        self._store = store
        self._held: list[pl.DataFrame] = []
        self._bytes = 0
        self._runs = 0

    def add(self, block: bytes) -> None:
        split = block.split(b"\n")
        lines = pl.Series("line", split, dtype=pl.Binary)
        ids = text_column(split, block).str.extract(_ID_IN_LINE, 1)
        del split
        pairs = pl.DataFrame({"id": ids, "line": lines}).filter(pl.col("id").is_not_null())
        self._held.append(pairs)
        self._bytes += len(block)
        if self._bytes >= RUN_BYTES:
            self._write()

    def close(self) -> None:
        self._write()
        merge_parts(self._store)

    def _write(self) -> None:
        if not self._held:
            return
        run = pl.concat(self._held, how="vertical").sort("id", maintain_order=True)
        self._held, self._bytes = [], 0
        write_store(
            self._store,
            zip(run.get_column("id").to_list(), run.get_column("line").to_list(), strict=True),
            part=self._runs,
            block_bytes=PART_BLOCK_BYTES,
        )
        self._runs += 1


def _remove_segment(directory: Path, key: str) -> None:
    shutil.rmtree(directory / "segments" / key, ignore_errors=True)
    for part in (directory / "data").glob(f"date=*/{key}-*.parquet"):
        part.unlink(missing_ok=True)


def indexed_frame(sources: Sequence[Source]) -> tuple[pl.LazyFrame, LoadReport] | None:
    """A LazyFrame over the fresh index of `sources` (None when it is missing or stale)."""
    found = fresh_segments(sources)
    if found is None:
        return None
    directory, keys = found
    manifest = read_manifest(directory) or {}
    files = [p for k in keys for p in segment_files(directory, k)]
    report = LoadReport(files=[s.name for s in sources])
    for source, k in zip(sources, keys, strict=True):
        report.add_segment(manifest["segments"][k], source.name)
    schema = read_schema()
    if not files:
        if any(manifest["segments"][k]["rows"] for k in keys):
            return None  # the data files are gone: read the JSON
        return pl.DataFrame(schema=schema).lazy(), report
    frame = pl.scan_parquet(files, hive_partitioning=False)
    present = frame.collect_schema()
    # An index written before a field was declared reads that field as null.
    return frame.select(
        [pl.col(n) if n in present else pl.lit(None, dtype=t).alias(n) for n, t in schema.items()]
    ), report


#: Logs at least this large are indexed automatically the second time the same files are queried.
AUTO_INDEX_BYTES = 256 * 1024 * 1024
_LAST_QUERY = "last_query.json"


def auto_index(
    paths: Paths = None,
    *,
    min_bytes: int = AUTO_INDEX_BYTES,
    progress: Progress | None = None,
) -> IndexReport | None:
    """Index large logs on their second query: the first query notes the files, the second indexes them.

    Returns the report when it built an index, None otherwise (small logs, a fresh
    index already, stdin, or the first query of these files as they are now).
    """
    sources = [s for s in resolve_sources(paths) if s.name != "<stdin>"]
    if not sources or sum(s.path.stat().st_size for s in sources) < min_bytes:
        return None
    if fresh_segments(sources) is not None:
        return None
    keys = [segment_key(s.path) for s in sources]
    directory = index_dir(sources)
    marker = directory / _LAST_QUERY
    try:
        seen = orjson.loads(marker.read_bytes()) == keys
    except (OSError, orjson.JSONDecodeError):
        seen = False
    if seen:
        return build_index(paths, progress=progress)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(orjson.dumps(keys))
    except OSError:
        pass  # a read-only log directory: no automatic index, nothing else changes
    return None
