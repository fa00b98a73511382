"""`mcptrace index LOGS --dest URL`: ship logs as index segments to a fleet dataset (a folder or S3).

Layout under the destination (hive partitions, read alike by mcptrace, polars,
DuckDB and Spark):

    date=YYYY-MM-DD/replica=R/<file>-<offset>-<n>.parquet    rows, typed columns + `replica`
    _mcptrace/replica=R/<file>/<offset>/chains-<k>.bin        raw lines sorted by request id (`_chainstore`)
    _mcptrace/replica=R/<file>/<offset>/chains.idx            first id, object, offset, length of each block
    _mcptrace/replica=R/<file>/<offset>/seal.json             written last: the shipment exists from then on

`<file>` names a log file by the hash of its first line, so a file keeps its
name when it is rotated or compressed; `<offset>` is where in the file (in
uncompressed bytes) the shipment starts. Shipping the same file again ships
only what it gained since its last seal; a shipment that failed half-way has no
seal, is invisible to readers, and is written again under the same names.
Every object stays under `MAX_OBJECT_BYTES` and is written whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from mcptrace._fields import REPLICA
from mcptrace.logs._chainstore import TABLE_SUFFIX, read_table
from mcptrace.logs._dataset import DayFiles
from mcptrace.logs._index import _Runs
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._objects import CHAIN_TABLE, META, SEAL, Objects
from mcptrace.logs._parse import Seen, parse_block, read_schema
from mcptrace.logs._sources import Paths, Source, open_binary, resolve_sources

#: Kept under the size at which S3 clients switch to multipart uploads.
MAX_OBJECT_BYTES = 6 * 1024 * 1024
BLOCK_BYTES = 4 * 1024 * 1024
_REPLICA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FIRST_LINE_BYTES = 64 * 1024


@dataclass
class ShipReport:
    dest: str
    replica: str
    #: Keys of the seals written (one per file that had new lines).
    shipped: list[str] = field(default_factory=list)
    #: Files with nothing new since their last seal.
    unchanged: list[str] = field(default_factory=list)
    rows: int = 0
    bytes_shipped: int = 0
    load: LoadReport = field(default_factory=LoadReport)

    def summary(self) -> str:
        return self.load.summary()


def ship(paths: Paths, dest: str | os.PathLike[str], *, replica: str | None = None) -> ShipReport:
    """Ship every log file of `paths` (what each gained since its last shipment) to the dataset at `dest`."""
    name = replica or socket.gethostname().split(".")[0] or "localhost"
    if not _REPLICA_NAME.match(name):
        raise ValueError(f"not a replica name: {name!r} (letters, digits, '.', '_' and '-')")
    sources = [s for s in resolve_sources(paths) if s.name != "<stdin>"]
    if not sources:
        raise ValueError("nothing to ship (stdin cannot be shipped)")
    objects = Objects(dest)
    report = ShipReport(dest=objects.url, replica=name)
    for source in sources:
        file_id = _file_id(source)
        if file_id is None:
            report.unchanged.append(source.name)
            continue
        start, first_line = _shipped_to(objects, name, file_id)
        seal = _ship_part(objects, source, name, file_id, start, first_line, report)
        if seal is None:
            report.unchanged.append(source.name)
        else:
            report.shipped.append(seal)
    return report


def _file_id(source: Source) -> str | None:
    """A log file's name in the dataset: the hash of its first line (None while it has no whole line)."""
    with open_binary(source) as fh:
        first = fh.readline(_FIRST_LINE_BYTES)
    if not first.endswith(b"\n"):
        return None
    return hashlib.sha1(first).hexdigest()[:16]


def seal_key(replica: str, file_id: str, offset: int) -> str:
    return f"{META}/{REPLICA}={replica}/{file_id}/{offset:012d}/{SEAL}"


def _shipped_to(objects: Objects, replica: str, file_id: str) -> tuple[int, int]:
    """(byte offset, next line number) where the file's sealed shipments end."""
    end, line = 0, 1
    for key in objects.list(f"{META}/{REPLICA}={replica}/{file_id}"):
        if key.endswith("/" + SEAL):
            seal = orjson.loads(objects.get(key))
            if seal["end_offset"] > end:
                end, line = seal["end_offset"], seal["end_line"]
    return end, line


def _blocks(source: Source, start: int) -> Iterator[bytes]:
    """Whole lines of `source` from byte `start` (uncompressed) to its last newline as it is now."""
    with open_binary(source) as fh:
        if source.compression is None:
            fh.seek(start)
        else:
            skip = start
            while skip:
                got = len(fh.read(min(skip, BLOCK_BYTES)))
                if not got:
                    return
                skip -= got
        rest = b""
        while True:
            chunk = fh.read(BLOCK_BYTES)
            if not chunk:
                return  # a last line without a newline may still be written: it waits for the next shipment
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            yield data[: cut + 1]
            rest = data[cut + 1 :]


def _ship_part(
    objects: Objects, source: Source, replica: str, file_id: str, start: int, first_line: int, report: ShipReport
) -> str | None:
    schema = read_schema()
    load = LoadReport(files=[source.name])
    prefix = f"{file_id}-{start:012d}"
    with tempfile.TemporaryDirectory(prefix="mcptrace-ship-") as tmp:
        staging = Path(tmp)
        store = staging / "chains"
        store.mkdir()
        days = DayFiles(staging, prefix, max_file_bytes=MAX_OBJECT_BYTES)
        runs = _Runs(store)
        seen = Seen()
        line, end, rows = first_line, start, 0
        first_ts: Any = None
        try:
            for block in _blocks(source, start):
                data = parse_block(block, first_line=line, source=source, schema=schema, report=load, seen=seen)
                if data.height:
                    rows += data.height
                    block_first = data.get_column("timestamp").min()
                    first_ts = block_first if first_ts is None else min(first_ts, block_first)
                    days.add(data.with_columns(pl.lit(replica).alias(REPLICA)))
                runs.add(block)
                line += block.count(b"\n")
                end += len(block)
            runs.close()
            files = days.close()
        except BaseException:
            days.abort()
            raise
        if end == start:
            return None
        base = f"{META}/{REPLICA}={replica}/{file_id}/{start:012d}"
        parquet: dict[str, int] = {}
        for path in files:
            key = f"{path.parent.name}/{REPLICA}={replica}/{path.name}"
            objects.put(key, path.read_bytes())
            parquet[key] = path.stat().st_size
        chains = _put_chains(objects, store, base)
        seal = {
            "replica": replica,
            "file": file_id,
            "source": source.name,
            "offset": start,
            "end_offset": end,
            "first_line": first_line,
            "end_line": line,
            "rows": rows,
            "first_timestamp": first_ts.isoformat() if first_ts is not None else None,
            "parquet": parquet,
            "chains": chains,
            **load.segment_entry(),
        }
        key = f"{base}/{SEAL}"
        objects.put(key, orjson.dumps(seal, option=orjson.OPT_INDENT_2))
    report.rows += rows
    report.bytes_shipped += end - start
    report.load.files.append(source.name)
    report.load.add_segment(load.segment_entry(), source.name)
    return key


def _put_chains(objects: Objects, store: Path, base: str) -> dict[str, int]:
    """Upload the chain store cut into objects of whole blocks, with one table naming each block's object."""
    rows: list[str] = []
    sizes: dict[str, int] = {}
    for table in sorted(store.glob("chains-*" + TABLE_SUFFIX)):
        ids, spans = read_table(table)
        data = table.with_suffix(".bin").read_bytes()
        groups: list[list[tuple[str, int, int]]] = [[]]
        size = 0
        for rid, (offset, length) in zip(ids, spans, strict=True):
            if groups[-1] and size + length > MAX_OBJECT_BYTES:
                groups.append([])
                size = 0
            groups[-1].append((rid, offset, length))
            size += length
        for group in filter(None, groups):
            key = f"{base}/chains-{len(sizes):06d}.bin"
            start = group[0][1]
            chunk = data[start : group[-1][1] + group[-1][2]]
            objects.put(key, chunk)
            sizes[key] = len(chunk)
            rows.extend(f"{rid}\t{key.rsplit('/', 1)[1]}\t{off - start}\t{n}\n" for rid, off, n in group)
    table_key = f"{base}/{CHAIN_TABLE}"
    body = "".join(rows).encode()
    objects.put(table_key, body)
    sizes[table_key] = len(body)
    return sizes
