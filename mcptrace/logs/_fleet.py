"""Reading a fleet dataset (see `_ship`): only sealed shipments, as one frame or one request's lines.

A source is a fleet dataset when it is an `s3://` URL or a folder holding the
dataset's `_mcptrace/` tables. Loading reads the Parquet files the seals list
(never a file without a seal, so a shipment cut short is invisible), in the
order the local logs would be read: replica by replica, each file's lines in
order. A request lookup reads each shipment's small id table and then only the
block whose id range can hold the request.
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mcptrace._fields import REPLICA
from mcptrace.logs._judge import judge_line
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._objects import CHAIN_TABLE, META, SEAL, Objects, is_url
from mcptrace.logs._search import record_time
from mcptrace.logs._sources import Paths


def fleet_root(paths: Paths) -> str | None:
    """The dataset named by `paths` (one URL or one dataset folder), or None for plain logs."""
    if paths is None:
        return None
    given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if len(given) != 1:
        return None
    text = os.fspath(given[0])
    if is_url(text) or (Path(text) / META).is_dir():
        return text
    return None


def seals(objects: Objects, replicas: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every sealed shipment, in reading order: by replica, then each file from its first line on."""
    found = []
    for key in objects.list(META):
        if not key.endswith("/" + SEAL):
            continue
        replica = key.split("/")[1].removeprefix(f"{REPLICA}=")
        if replicas and replica not in replicas:
            continue
        seal = orjson.loads(objects.get(key))
        seal["key"] = key.rsplit("/", 1)[0]
        found.append(seal)
    starts = {(s["replica"], s["file"]): s["first_timestamp"] or "" for s in found if s["offset"] == 0}
    found.sort(key=lambda s: (s["replica"], starts.get((s["replica"], s["file"]), ""), s["file"], s["offset"]))
    return found


def load_fleet(
    root: str, columns: Sequence[str], replicas: Sequence[str] | None = None, where: Any = None
) -> tuple[Any, LoadReport]:
    """(DataFrame of `columns` + `replica`, load report) over the sealed shipments of the dataset at `root`.

    Files are read one at a time, only the `columns` asked for, and filtered by
    `where` at once: memory follows the answer, not the dataset.
    """
    import polars as pl
    import pyarrow.parquet as pq

    from mcptrace.logs._parse import read_schema

    schema = read_schema()
    objects = Objects(root)
    report = LoadReport()
    frames = []
    for seal in seals(objects, replicas):
        name = f"{seal['replica']}:{seal['source']}"
        report.files.append(name)
        report.add_segment(seal, name)
        for key in sorted(seal["parquet"], key=lambda k: k.rsplit("-", 1)[1]):
            parquet = pq.ParquetFile(io.BytesIO(objects.get(key)))
            present = set(parquet.schema_arrow.names)
            frame = pl.from_arrow(parquet.read(columns=[c for c in [*columns, REPLICA] if c in present]))
            assert isinstance(frame, pl.DataFrame)
            frame = frame.select(
                [pl.col(c).cast(schema[c]) if c in present else pl.lit(None, dtype=schema[c]).alias(c) for c in columns]
                + [pl.col(REPLICA).cast(pl.String)]
            )
            frames.append(frame if where is None else frame.filter(where))
    report.bytes_read = objects.bytes_read
    if not frames:
        return pl.DataFrame(schema={**{c: schema[c] for c in columns}, REPLICA: pl.String}), report
    return pl.concat(frames, how="vertical"), report


@dataclass
class FleetLookup:
    records: list[dict[str, Any]]
    bytes_read: int
    bytes_total: int


def lookup_fleet(root: str, request_id: str, replicas: Sequence[str] | None = None) -> FleetLookup:
    """One request's records from every sealed shipment, each with its `replica`, in time order."""
    import zstandard

    objects = Objects(root)
    decompressor = zstandard.ZstdDecompressor()
    key = request_id.encode() + b"\t"
    records: list[dict[str, Any]] = []
    total = 0
    for seal in seals(objects, replicas):
        total += sum(seal["parquet"].values()) + sum(seal["chains"].values())
        rows = [r.split("\t") for r in objects.get(f"{seal['key']}/{CHAIN_TABLE}").decode().splitlines()]
        firsts = [r[0] for r in rows]
        # The block before the first block starting after the id, and every block starting with it.
        lo = max(bisect.bisect_left(firsts, request_id) - 1, 0)
        hi = bisect.bisect_right(firsts, request_id)
        for first, obj, offset, length in rows[lo:hi]:
            if first > request_id:
                break
            block = decompressor.decompress(objects.get_range(f"{seal['key']}/{obj}", int(offset), int(length)))
            for row in block.splitlines():
                if row.startswith(key):
                    record = judge_line(row[len(key) :]).record
                    if record is not None:
                        records.append({**record, REPLICA: seal["replica"]})
    records.sort(key=record_time)
    return FleetLookup(records, objects.bytes_read, total)
