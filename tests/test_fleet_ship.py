"""`mcptrace index LOGS --dest URL`: the fleet dataset's layout in S3 (moto on loopback) and in a folder,
shipments that only add, and destinations that cannot be written."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mcptrace.logs import load, ship
from mcptrace.logs._objects import Objects
from mcptrace.testing import subprocess_env
from tests.fleet_logs import fleet_logs
from tests.s3_server import S3Server, s3_env, s3_server  # noqa: F401

#: Objects are written whole with one PUT each: none may reach the size where multipart begins.
OBJECT_LIMIT = 8 * 1024 * 1024


@pytest.fixture
def bucket_url(s3_server: S3Server, s3_env: dict[str, str]) -> str:  # noqa: F811
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(name)
    return f"s3://{name}/logs"


def test_every_replica_ships_its_rows_in_hive_partitions(tmp_path: Path, bucket_url: str) -> None:
    logs = fleet_logs(tmp_path / "logs")
    for replica, folder in logs.items():
        report = ship([folder], bucket_url, replica=replica)
        assert report.rows == load([folder], use_index=False).frame.collect().height > 0
    objects = Objects(bucket_url).list("")
    parquet = [k for k in objects if k.endswith(".parquet")]
    seals = [k for k in objects if k.endswith("/seal.json")]
    assert {k.split("/")[1] for k in parquet} == {"replica=web-1", "replica=web-2", "replica=web-3"}
    assert all(k.startswith("date=20") for k in parquet)
    assert len(seals) == 4  # web-1's two files, one each for the others
    assert max(objects.values()) < OBJECT_LIMIT
    local = tmp_path / "copy"
    for replica, folder in logs.items():
        ship([folder], local, replica=replica)
    table = pq.read_table(local / parquet[0])
    assert table.column("replica").unique().to_pylist() == [parquet[0].split("/")[1].split("=")[1]]
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == sorted(objects)


def test_shipping_again_ships_only_what_the_log_gained(tmp_path: Path) -> None:
    folder = fleet_logs(tmp_path / "logs")["web-2"]
    dest = tmp_path / "fleet"
    first = ship([folder], dest, replica="web-2")
    before = Objects(dest).list("")
    again = ship([folder], dest, replica="web-2")
    assert (again.rows, again.shipped, Objects(dest).list("")) == (0, [], before)
    log = folder / "mcptrace.log"
    extra = log.read_bytes().splitlines(keepends=True)[-1]
    with log.open("ab") as fh:
        fh.write(extra.replace(b"req-", b"req-extra-"))
        fh.write(b'{"timestamp":"2026-12-05T07:13:42.139Z","event":"still be')  # a line being written
    grown = ship([folder], dest, replica="web-2")
    assert grown.rows == 1
    assert grown.shipped[0].split("/")[-2] == f"{first.bytes_shipped:012d}"  # it starts where the last one ended
    assert set(before) < set(Objects(dest).list(""))


def test_an_unwritable_destination_is_a_clear_error(tmp_path: Path, s3_env: dict[str, str]) -> None:  # noqa: F811
    folder = fleet_logs(tmp_path / "logs")["web-3"]
    run = subprocess.run(
        [sys.executable, "-m", "mcptrace", "index", str(folder), "--dest", "s3://no-such-bucket/x"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(s3_env),
    )
    assert run.returncode != 0
    assert "no-such-bucket" in run.stderr and "Traceback" not in run.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "mcptrace", "index", str(folder), "--dest", str(tmp_path), "--replica", "a/b"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(),
    )
    assert bad.returncode != 0 and "not a replica name" in bad.stderr
