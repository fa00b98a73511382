"""`mcptrace serve --ship URL`: every rotated log file reaches the fleet dataset, and an outage of the
object store loses nothing.

The real server on 127.0.0.1, with a small rotation size, ships to an S3 server (moto) on loopback;
calls go through the real SDK client in both protocol eras. The dataset answers `chain` for them.
Then the S3 server is stopped: the next rotation's shipment fails, the log says so
(`log_ship_failed`: the file, the error, the next try) and the server goes on answering. The S3
server comes back on the same port and the retry ships the file: every call the clients made is in
the dataset, once. A file queued when the server is killed is shipped when it starts again.
`mcptrace proxy --ship` and the server behind it ship the two halves of a request, and the dataset
gives it back whole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import httpx
import polars as pl
import pytest
from mcp import Client
from moto.server import ThreadedMotoServer

from mcptrace.logs._objects import Objects
from mcptrace.testing import running_proxy, running_server, subprocess_env
from tests.helpers import UNLIMITED, read_log
from tests.proxies import free_port
from tests.s3_server import CREDENTIALS

MODERN = "2026-07-28"
META_ID = "mcptrace/mcp_request_id"
BUCKET = "fleet-logs"
#: Small enough that a few dozen calls rotate the log.
ROTATE_BYTES = 24_000
#: A shipment is a child process that imports polars and pyarrow: seconds on a busy machine.
SHIP_WAIT = 90.0

pytestmark = pytest.mark.slow


class S3Server:
    """moto in server mode on a loopback port that can be stopped and started again on the same port, keeping
    what it stored (its state lives in this process), as an object store that goes away and comes back does."""

    def __init__(self) -> None:
        self.port = free_port()
        self.env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}"}
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def dataset_rows(dest: str, env: dict[str, str]) -> pl.DataFrame:
    """Every row of the dataset's Parquet objects, read from the store."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        objects = Objects(dest)
        keys = sorted(k for k in objects.list("") if k.endswith(".parquet"))
        frames = [pl.read_parquet(objects.get(k)) for k in keys]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def ship_env(s3: S3Server) -> dict[str, str]:
    return {**s3.env, "MCPTRACE_SHIP_RETRY": "0.5", "MCPTRACE_SHIP_RETRY_MAX": "2"}


def call_until_rotated(url: str, log: Path, rotations: int, *, limit: int = 400) -> list[str]:
    """Tool calls through the SDK client (both eras) until the log has rotated `rotations` times in all;
    returns the request ids of the answers."""
    ids: list[str] = []

    async def main() -> None:
        with anyio.fail_after(120):
            for mode in ("legacy", MODERN):
                async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
                    for i in range(limit):
                        result = await client.call_tool("search_database", {"query": f"anvil {i}", "limit": 2})
                        ids.append(result.meta[META_ID])  # type: ignore[index]
                        if i >= 10 and rotated(log) >= rotations:
                            return

    anyio.run(main)
    assert rotated(log) >= rotations, "the log did not rotate"
    return ids


def rotated(log: Path) -> int:
    return sum(1 for p in log.parent.glob(log.name + ".*") if p.name.removeprefix(log.name + ".").isdigit())


def closing_ids(paths: list[Path]) -> list[str]:
    """Request ids of the `tool_call` lines of `paths`."""
    return [str(r["mcp_request_id"]) for p in paths for r in read_log(p) if r["event"] == "tool_call"]


def rotated_files(log: Path) -> list[Path]:
    return [p for p in log.parent.glob(log.name + ".*") if p.name.removeprefix(log.name + ".").isdigit()]


def every_line(log: Path) -> list[dict[str, Any]]:
    """The lines of the log and its rotated files, oldest first."""
    files = sorted(rotated_files(log), key=lambda p: -int(p.name.rsplit(".", 1)[1]))
    return [r for p in [*files, log] if p.exists() for r in read_log(p)]


def wait_for_event(log: Path, event: str, *, count: int = 1) -> list[dict[str, Any]]:
    """The `event` lines of the log and its rotated files, once there are `count` of them (bounded wait)."""
    deadline = time.monotonic() + SHIP_WAIT
    while True:
        found = [r for r in every_line(log) if r["event"] == event]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, [r for r in every_line(log) if str(r["event"]).startswith("log_ship")]
        time.sleep(0.1)


def shipping_health(base_url: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The `log_shipping` check of the server's `/health` once `until` holds for it."""
    health = f"{base_url}/health"
    deadline = time.monotonic() + SHIP_WAIT
    while True:
        check = httpx.get(health, timeout=5).json()["checks"]["log_shipping"]
        if until(check) or time.monotonic() > deadline:
            assert until(check), check
            return dict(check)
        time.sleep(0.2)


def queued_name(line: dict[str, Any]) -> str:
    """The queued file a `log_shipped` or `log_ship_failed` line names (`<file> shipped to <dest>`)."""
    return str(line["message"]).split(" ", 1)[0]


def shipped_lines(log: Path, *, count: int) -> list[dict[str, Any]]:
    return wait_for_event(log, "log_shipped", count=count)


@pytest.fixture
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=server.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


def test_rotated_logs_reach_the_dataset_and_an_outage_of_the_store_loses_nothing(
    tmp_path: Path, s3: S3Server,
) -> None:
    dest = f"s3://{BUCKET}/fleet"
    env = ship_env(s3)
    args = ("--log-max-bytes", str(ROTATE_BYTES), "--ship", dest, "--replica", "r1", *UNLIMITED)
    with running_server(tmp_path / "r1", *args, env=env) as server:
        log = server.log_file
        first = call_until_rotated(server.url, log, 1)
        shipped = shipped_lines(log, count=1)[0]
        assert shipped["message"].startswith("mcptrace.log.") and shipped["message"].endswith(f" shipped to {dest}")
        assert shipped["duration_ms"] > 0

        # The dataset holds the calls of the shipped file.
        in_shipped = [i for i in first if i in set(closing_ids([log.with_name("mcptrace.log.1")]))]
        assert in_shipped
        rows = dataset_rows(dest, s3.env)
        assert set(in_shipped) <= set(rows.filter(pl.col("event") == "tool_call")["mcp_request_id"].to_list())
        # ... and `chain` finds one of them from the URL alone.
        chain = subprocess.run(
            [sys.executable, "-m", "mcptrace", "chain", in_shipped[-1], dest, "--format", "json"],
            env=subprocess_env(s3.env), capture_output=True, text=True, timeout=120,
        )
        assert chain.returncode == 0, chain.stderr
        lines = json.loads(chain.stdout)
        assert in_shipped[-1] in chain.stdout and "tool_call" in chain.stdout, lines

        # The store goes away: the next rotation's shipment fails, and the log says so.
        s3.stop()
        during = call_until_rotated(server.url, log, 2)
        assert during  # every call was answered meanwhile
        [failed, *_] = wait_for_event(log, "log_ship_failed")
        assert failed["level"] == "warning" and failed["error"] and failed["retry_after_ms"] >= 500
        queue = log.parent / ".mcptrace-ship"
        assert failed["message"] == f"{queued_name(failed)} not shipped to {dest}"
        assert queued_name(failed) in {p.name for p in queue.iterdir()}
        # /health says so too, while the store is away: the server works, its evidence waits.
        down = shipping_health(server.base_url, lambda c: c["status"] == "degraded")
        assert down["error"] == failed["error"] and down["queued"] >= 1 and down["failed"] >= 1
        assert down["shipped"] == 1 and down["last_shipped"]

        # It comes back on the same port: the retry ships the queued file.
        s3.start()
        shipped_lines(log, count=2)
        assert not list(queue.iterdir())
        back = shipping_health(server.base_url, lambda c: c["status"] == "healthy")
        assert back["queued"] == 0 and back["shipped"] >= 2 and "error" not in back
        retried = [r for r in every_line(log)
                   if r["event"] == "log_shipped" and queued_name(r) == queued_name(failed)]
        assert len(retried) == 1

        # Every call of every rotated file is in the dataset, once.
        expected = closing_ids(rotated_files(log))
        assert len(expected) == len(set(expected)) >= 20
        frame = dataset_rows(dest, s3.env).filter(pl.col("event") == "tool_call")
        found = frame["mcp_request_id"].to_list()
        assert sorted(found) == sorted(expected)
        assert set(frame["replica"].unique().to_list()) == {"r1"}


def test_a_file_queued_when_the_server_dies_is_shipped_when_it_starts_again(tmp_path: Path, s3: S3Server) -> None:
    dest = f"s3://{BUCKET}/restart"
    env = ship_env(s3)
    args = ("--log-max-bytes", str(ROTATE_BYTES), "--ship", dest, "--replica", "r2", *UNLIMITED)
    s3.stop()
    with running_server(tmp_path / "r2", *args, env=env) as server:
        log = server.log_file
        call_until_rotated(server.url, log, 1)
        [failed, *_] = wait_for_event(log, "log_ship_failed")
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
    queue = log.parent / ".mcptrace-ship"
    assert [p.name for p in queue.iterdir()] == [queued_name(failed)]
    s3.start()
    with running_server(tmp_path / "r2", *args, env=env):
        deadline = time.monotonic() + SHIP_WAIT
        while list(queue.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        [shipped] = shipped_lines(log, count=1)
        assert queued_name(shipped) == queued_name(failed)
    expected = closing_ids(rotated_files(log))
    found = dataset_rows(dest, s3.env).filter(pl.col("event") == "tool_call")["mcp_request_id"].to_list()
    assert sorted(found) == sorted(expected)


def test_a_proxy_and_its_server_ship_to_one_folder_and_chain_finds_a_request_on_both(tmp_path: Path) -> None:
    """`mcptrace proxy --ship` in front of `mcptrace serve --ship`: one request's lines are in two replicas'
    files, and the dataset (a folder here) gives them back together, each with its replica."""
    dest = tmp_path / "dataset"
    common = ("--log-max-bytes", str(ROTATE_BYTES), "--ship", str(dest), *UNLIMITED)
    with (
        running_server(tmp_path / "server", *common, "--replica", "backend") as server,
        running_proxy(tmp_path / "proxy", *common, "--replica", "edge", target=server.url) as proxy,
    ):
        proxy_log = proxy.workdir / "logs" / "mcptrace.log"
        ids = call_until_rotated(proxy.url, proxy_log, 1)
        wait_for_event(proxy_log, "log_shipped")
        wait_for_event(server.log_file, "log_shipped")
        at_edge = set(closing_ids([proxy_log.with_name("mcptrace.log.1")]))
        both = at_edge & set(closing_ids(rotated_files(server.log_file)))
        assert both and both <= set(ids)
    request_id = sorted(both)[0]
    chain = subprocess.run([sys.executable, "-m", "mcptrace", "chain", request_id, str(dest), "--format", "json"],
                           env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert chain.returncode == 0, chain.stderr
    assert '"edge"' in chain.stdout and '"backend"' in chain.stdout, chain.stdout
