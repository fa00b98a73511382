"""Reading a fleet dataset (see `_ship`): only sealed shipments, as one frame or one request's lines.

A source is a fleet dataset when it is an `s3://` URL or a folder holding the
dataset's `_mcptrace/` tables. Loading reads the Parquet files the seals list
(never a file without a seal, so a shipment cut short is invisible), in the
order the local logs would be read: replica by replica, each file's lines in
order. A request lookup reads each shipment's small id table and then only the
block whose id range can hold the request. Objects are fetched a few at a time
(`READERS`): on object storage each read waits on a round trip, not on the CPU.
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from mcptrace._fields import REPLICA
from mcptrace.logs._judge import judge_line
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._objects import CHAIN_TABLE, META, SEAL, Objects, is_url
from mcptrace.logs._search import record_time
from mcptrace.logs._sources import Paths

#: Objects read at once. Reads hold no lock of ours (pyarrow's S3 client and polars' decoder release
#: the GIL), so a few hide the round trips; each one more holds another object's decoding in memory
#: (2 GB of logs, `stats` on a folder: 324 MB peak with 1, 367 MB with 4, 417 MB with 8).
READERS = 4

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def _in_order(read: Callable[[_Item], _Result], items: Iterable[_Item]) -> list[_Result]:
    """`read` over `items` on up to `READERS` threads, the results in the order of `items`."""
    todo = list(items)
    if len(todo) < 2:
        return [read(item) for item in todo]
    with ThreadPoolExecutor(max_workers=min(READERS, len(todo)), thread_name_prefix="mcptrace-fleet") as pool:
        return list(pool.map(read, todo))


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
    keys = []
    for key in objects.list(META):
        if not key.endswith("/" + SEAL):
            continue
        replica = key.split("/")[1].removeprefix(f"{REPLICA}=")
        if replicas and replica not in replicas:
            continue
        keys.append(key)

    def read(key: str) -> dict[str, Any]:
        seal: dict[str, Any] = orjson.loads(objects.get(key))
        seal["key"] = key.rsplit("/", 1)[0]
        return seal

    found = _in_order(read, keys)
    starts = {(s["replica"], s["file"]): s["first_timestamp"] or "" for s in found if s["offset"] == 0}
    found.sort(key=lambda s: (s["replica"], starts.get((s["replica"], s["file"]), ""), s["file"], s["offset"]))
    return found


def load_fleet(
    root: str, columns: Sequence[str], replicas: Sequence[str] | None = None, where: Any = None
) -> tuple[Any, LoadReport]:
    """(DataFrame of `columns` + `replica`, load report) over the sealed shipments of the dataset at `root`.

    Files are read a few at a time, only the `columns` asked for, and each is
    filtered by `where` at once: memory follows the answer, not the dataset.
    """
    import polars as pl

    from mcptrace.logs._parse import read_schema

    schema = read_schema()
    objects = Objects(root)
    report = LoadReport()
    keys = []
    for seal in seals(objects, replicas):
        name = f"{seal['replica']}:{seal['source']}"
        report.files.append(name)
        report.add_segment(seal, name)
        keys.extend(sorted(seal["parquet"], key=lambda k: k.rsplit("-", 1)[1]))

    def read(key: str) -> pl.DataFrame:
        # polars' own Parquet reader, lazily: it decodes only the columns asked for and filters as it
        # goes (half the time and half the memory of decoding through pyarrow, then filtering).
        lazy = pl.scan_parquet(io.BytesIO(objects.get(key)))
        present = set(lazy.collect_schema().names())
        lazy = lazy.select(
            [pl.col(c).cast(schema[c]) if c in present else pl.lit(None, dtype=schema[c]).alias(c) for c in columns]
            + [pl.col(REPLICA).cast(pl.String)]
        )
        return (lazy if where is None else lazy.filter(where)).collect()

    frames = _in_order(read, keys)
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
    key = request_id.encode() + b"\t"
    found = seals(objects, replicas)
    total = sum(sum(seal["parquet"].values()) + sum(seal["chains"].values()) for seal in found)

    def read(seal: dict[str, Any]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        decompressor = zstandard.ZstdDecompressor()  # one per thread: a decompressor is not shared
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
        return records

    records = [record for part in _in_order(read, found) for record in part]
    records.sort(key=record_time)
    return FleetLookup(records, objects.bytes_read, total)
