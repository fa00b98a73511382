"""Log lines into a typed LazyFrame, with every unreadable line accounted for.

Lines are read (never memory-mapped) and judged in blocks with the pinned
schema (no inference, see `_parse`), the blocks on every core (`_blocks`). Only the requested
columns and the rows matching `where` are kept, so memory follows the size of
the answer, not of the logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace.logs._blocks import judged_blocks
from mcptrace.logs._fleet import fleet_root, load_fleet
from mcptrace.logs._index import indexed_frame
from mcptrace.logs._loadreport import CorruptLine, LoadReport
from mcptrace.logs._parse import read_schema
from mcptrace.logs._sources import Paths, Progress, Source, resolve_sources

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
    replicas: Sequence[str] | None = None,
) -> Loaded:
    """Read log files into a LazyFrame typed by the pinned schema.

    `columns` narrows what is parsed (timestamp and event are always kept);
    `where` filters rows block by block; `events` keeps only those events, and
    lines that cannot be one of them are not decoded (see `_parse.may_hold`).
    Every line is judged by the reading rules (`_parse`): the ones that are
    not records are counted in the report with file:line and a reason, never
    raised, and so are values read as null.
    When `mcptrace index` has indexed exactly these files as they are now, the
    Parquet index is read instead (`use_index=False` forces the JSON).
    `paths` may also be a fleet dataset (an `s3://` URL or a folder written by
    `mcptrace index --dest`): its frame has a `replica` column too, and
    `replicas` keeps only those replicas.
    """
    if events is not None:
        wanted = pl.col(f.EVENT).is_in(list(events))
        where = wanted if where is None else wanted & where
    if columns is not None and where is not None:
        columns = [*columns, *(c for c in where.meta.root_names() if c not in columns)]
    schema = read_schema(columns)
    root = fleet_root(paths)
    if root is not None or replicas:
        if root is None:
            raise LogReadError(
                "replicas are chosen in a fleet dataset: an s3:// URL or a folder written by `mcptrace index --dest`"
            )
        fleet, fleet_report = load_fleet(root, list(schema), replicas, where)
        return Loaded(_without_empty_columns(fleet).lazy(), fleet_report)
    sources = resolve_sources(paths)
    fallback = None
    if use_index:
        try:
            indexed = indexed_frame(sources)
            if indexed is not None:
                lazy, report = indexed
                lazy = lazy.select(list(schema))
                # Collected here, as the JSON path does: a damaged index is found now, not by the query.
                data = (lazy if where is None else lazy.filter(where)).collect()
                return Loaded(_without_empty_columns(data).lazy(), report)
        except Exception as exc:  # whatever is wrong with the index, the logs themselves still answer
            fallback = f"the index of these logs cannot be read ({_short(exc)}): read the JSON logs instead"
    report = LoadReport(files=[s.name for s in sources])
    if fallback is not None:
        report.unreadable.append(fallback)
    total = sum(_size(s) for s in sources)
    frames: list[pl.DataFrame] = []
    for source in sources:
        try:
            for frame, size in judged_blocks(source, schema=schema, report=report, reduce=_kept(where), events=events):
                report.bytes_read += size
                if frame.height:
                    frames.append(frame)
                if progress is not None:
                    progress(report.bytes_read, total)
        except LogReadError as exc:
            report.unreadable.append(str(exc))
    data = pl.concat(frames, how="vertical", rechunk=False) if frames else pl.DataFrame(schema=schema)
    return Loaded(_without_empty_columns(data).lazy(), report)


def _without_empty_columns(data: pl.DataFrame) -> pl.DataFrame:
    """`data` with each column that is null on every row held as one typed null, not one per row.

    The schema has many optional fields, and most logs leave most of them out
    (35 of 57 columns in a typical log). Each such column would still hold a
    16-byte slot per row and be copied by every sort and filter of the frame.
    Same columns, same types, same values.
    """
    if not data.height:
        return data
    counts = data.null_count().row(0)
    empty = [name for name, nulls in zip(data.columns, counts, strict=True) if nulls == data.height]
    if not empty:
        return data
    return data.with_columns(pl.lit(None, dtype=data.schema[name]).alias(name) for name in empty)


def _kept(where: pl.Expr | None) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def kept(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(where) if where is not None and frame.height else frame

    return kept


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:120]}" if text else type(exc).__name__


def _size(source: Source) -> int:
    try:
        return source.path.stat().st_size
    except OSError:
        return 0
