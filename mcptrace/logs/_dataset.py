"""The index's Parquet dataset, written as the log is read: files per segment and day, rows in log order.

Each block's rows are appended to the file of their day as a row group of
their own, as soon as they are parsed: nothing is held between blocks, so
writing costs the same memory for a 1 MB log and a 40 GB one, and the row
groups are as large as a block's rows (about 10,000 for the default block),
`MAX_ROW_GROUPS` of them per file.
The rows keep the order of the log, so reading the index gives the rows in
the same order as reading the JSON, ties included.

Files are written under a temporary name and renamed only when the whole
segment is done: a reader (or DuckDB's `**/*.parquet`) never sees half a
segment, and an interrupted index leaves nothing that looks complete.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from mcptrace import _fields as f

__all__ = ["DayFiles", "segment_files"]

#: Day files open at once; a day met again after its file was closed gets another file.
MAX_OPEN_FILES = 8
#: Row groups per file: a writer keeps every row group's metadata until it closes, so a
#: file is closed after this many and the day goes on in a new one.
MAX_ROW_GROUPS = 128
_PARTIAL = ".partial"
#: Plain strings, not string views: every Parquet reader knows them, and pyarrow writes them.
_COMPAT = pl.CompatLevel.oldest()


def segment_files(directory: Path, key: str) -> list[Path]:
    """The finished Parquet files of a segment, in the order they were written."""
    return sorted((directory / "data").glob(f"date=*/{key}-*.parquet"), key=lambda p: p.stem.rsplit("-", 1)[1])


class DayFiles:
    """Appends a segment's rows to `data/date=YYYY-MM-DD/<key>-<n>.parquet`, one open file per day."""

    def __init__(self, directory: Path, key: str, *, max_file_bytes: int | None = None) -> None:
        self._directory = directory / "data"
        self._key = key
        #: A file is closed once it reaches this size (objects shipped whole stay small), else after
        #: `MAX_ROW_GROUPS` row groups.
        self._max_file_bytes = max_file_bytes
        self._open: dict[dt.date, pq.ParquetWriter] = {}
        self._groups: dict[dt.date, int] = {}
        self._written: list[Path] = []
        self._paths: dict[dt.date, Path] = {}

    def add(self, frame: pl.DataFrame) -> None:
        """Append a block's rows (every row has a timestamp: the parser rejects the others)."""
        if not frame.height:
            return
        days = frame.get_column(f.TIMESTAMP).dt.date()
        if days.n_unique() == 1:
            self._append(days[0], frame)
            return
        parts = frame.with_columns(days.alias("_day")).partition_by("_day", as_dict=True, maintain_order=True)
        for (day,), part in parts.items():
            self._append(day, part.drop("_day"))

    def close(self) -> list[Path]:
        """Close every file and give them their final names."""
        for writer in self._open.values():
            writer.close()
        self._open.clear()
        final = []
        for partial in self._written:
            target = partial.with_name(partial.name.removesuffix(_PARTIAL))
            partial.replace(target)
            final.append(target)
        self._written = []
        return final

    def abort(self) -> None:
        """Close and delete whatever was written (an interrupted or failed index)."""
        for writer in self._open.values():
            writer.close()
        self._open.clear()
        for partial in self._written:
            partial.unlink(missing_ok=True)
        self._written = []

    def _append(self, day: dt.date, frame: pl.DataFrame) -> None:
        table = frame.to_arrow(compat_level=_COMPAT)
        writer = self._open.pop(day, None)
        if writer is None:
            if len(self._open) >= MAX_OPEN_FILES:
                oldest = next(iter(self._open))  # the least recently used
                self._open.pop(oldest).close()
                self._groups.pop(oldest, None)
            folder = self._directory / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self._key}-{len(self._written):06d}.parquet{_PARTIAL}"
            writer = pq.ParquetWriter(path, table.schema, compression="zstd", write_statistics=True)
            self._written.append(path)
            self._paths[day] = path
        writer.write_table(table, row_group_size=frame.height)
        self._groups[day] = self._groups.get(day, 0) + 1
        full = self._max_file_bytes is not None and self._paths[day].stat().st_size >= self._max_file_bytes
        if self._groups[day] >= MAX_ROW_GROUPS or full:
            writer.close()
            del self._groups[day]
        else:
            self._open[day] = writer  # most recently used last
