"""`mcptrace index`: Parquet (zstd) beside the logs, so repeated questions skip the JSON.

Layout of an index directory (see `_manifest` for where it lives):

    data/date=2026-11-25/<segment>.parquet   rows sorted by mcp_request_id, 64k-row groups
    segments/<segment>/chains.bin|chains.idx  raw lines by request id (see `_chainstore`)
    manifest.json                             segments, line counts, corrupt lines

`data/` is a hive-partitioned dataset: DuckDB, Spark or Trino read it as it is
(`read_parquet('data/**/*.parquet', hive_partitioning=true)`). One segment per
source file: after a rotation only the new file is indexed again.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from mcptrace import _fields as f
from mcptrace.logs._chainstore import merge_parts, write_store
from mcptrace.logs._loadreport import CorruptLine, LoadReport
from mcptrace.logs._manifest import (
    fresh_segments,
    index_dir,
    read_manifest,
    segment_key,
    write_manifest,
)
from mcptrace.logs._parse import Seen, parse_block, read_schema, text_column
from mcptrace.logs._sources import Paths, Progress, Source, iter_blocks, resolve_sources
from mcptrace.logs._toolsummary import MANIFEST_KEY, summary_input, write_summary

ROW_GROUP_ROWS = 64 * 1024
#: JSON bytes indexed at a time: each part is sorted on its own (bounded memory).
PART_BYTES = 128 * 1024 * 1024
_ID_IN_LINE = r'"' + f.REQUEST_ID + r'"\s*:\s*"([^"]+)"'


@dataclass
class IndexReport:
    directory: Path
    indexed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    rows: int = 0
    corrupt_count: int = 0
    corrupt: list[CorruptLine] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return LoadReport(corrupt_count=self.corrupt_count, corrupt=self.corrupt).summary()


def build_index(paths: Paths = None, *, progress: Progress | None = None) -> IndexReport:
    """Index every source that has no current segment; drop segments of files that are gone."""
    sources = [s for s in resolve_sources(paths) if s.name != "<stdin>"]
    if not sources:
        raise ValueError("nothing to index (stdin cannot be indexed)")
    directory = index_dir(sources)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(directory) or {}
    segments: dict[str, Any] = dict(manifest.get("segments", {}))
    report = IndexReport(directory)
    keys = []
    total = sum(s.path.stat().st_size for s in sources)
    done = 0
    for source in sources:
        key = segment_key(source.path)
        keys.append(key)
        if key in segments:
            report.reused.append(source.name)
        else:
            segments[key] = _index_source(source, directory, key)
            report.indexed.append(source.name)
        done += source.path.stat().st_size
        if progress is not None:
            progress(done, total)
    for stale in set(segments) - set(keys):
        _remove_segment(directory, stale)
        del segments[stale]
    for source, key in zip(sources, keys, strict=True):
        info = segments[key]
        report.rows += info["rows"]
        report.corrupt_count += info["corrupt_count"]
        report.corrupt.extend(CorruptLine(**{**c, "file": source.name}) for c in info["corrupt"])
    write_manifest(directory, {"segments": segments})
    return report


def _index_source(source: Source, directory: Path, key: str) -> dict[str, Any]:
    """Index one file in parts of about `PART_BYTES`, so memory stays bounded whatever its size."""
    schema = read_schema()
    load_report = LoadReport(files=[source.name])
    store = directory / "segments" / key
    store.mkdir(parents=True, exist_ok=True)
    rows = 0
    calls: list[pl.DataFrame] = []
    seen = Seen()
    for part, (first_line, block) in enumerate(iter_blocks(source, block_size=PART_BYTES)):
        data = parse_block(block, first_line=first_line, source=source, schema=schema, report=load_report, seen=seen)
        rows += data.height
        calls.append(summary_input(data))
        _write_parquet(data, directory, f"{key}-{part:04d}")
        split = block.split(b"\n")
        lines = pl.Series("line", split, dtype=pl.Binary)
        ids = text_column(split, block).str.extract(_ID_IN_LINE, 1)
        del block, split
        raw = (
            pl.DataFrame({"id": ids, "line": lines})
            .filter(pl.col("id").is_not_null())
            .with_row_index("_order")
            .sort(["id", "_order"])
        )
        write_store(
            store,
            zip(raw.get_column("id").to_list(), raw.get_column("line").to_list(), strict=True),
            part=part,
        )
    merge_parts(store)
    summary = write_summary(pl.concat(calls) if calls else summary_input(pl.DataFrame(schema=schema)), store)
    return {
        MANIFEST_KEY: summary,
        "source": source.name,
        "rows": rows,
        **load_report.segment_entry(),
    }


def _write_parquet(data: pl.DataFrame, directory: Path, name: str) -> None:
    """One file per date under `date=YYYY-MM-DD/`, rows sorted by request id then time."""
    if not data.height:
        return
    data = data.with_row_index("_order").sort([f.REQUEST_ID, f.TIMESTAMP, "_order"], nulls_last=True)
    data = data.drop("_order").with_columns(pl.col(f.TIMESTAMP).dt.date().alias("_date"))
    for (day,), part in data.partition_by("_date", as_dict=True).items():
        target = directory / "data" / f"date={day}" / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        part.drop("_date").write_parquet(
            target, compression="zstd", row_group_size=ROW_GROUP_ROWS, statistics=True
        )


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
    # Sorted: each segment's parts in the order of its lines (rows of equal time keep the order written).
    files = [p for k in keys for p in sorted((directory / "data").glob(f"date=*/{k}-*.parquet"))]
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
