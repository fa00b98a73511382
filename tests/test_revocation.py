"""Revocation on the very next request: once `mcptrace token revoke` returned 0, nothing that starts later gets in.

A caller calls in a tight loop while its token is revoked, twenty times over, on
one replica and across two replicas that share only a real Redis (each has its
own copy of the token store, so the second learns of the revocation through
Redis alone). Every request records when it started; none that started after
the command returned may have been admitted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis as redis_client

from mcptrace.guards._tokens import TokenStore
from mcptrace.testing import RunningProcess, running_server, subprocess_env
from tests.helpers import eventually, wait_for_log
from tests.redis_server import Redis

ROUNDS = 20
PING = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ping", "arguments": {}, "_meta": {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}
UNLIMITED = ("--rate-limit-caller", "1e6/1e6", "--rate-limit-tools", "*=1e6/1e6")


def ping(http: httpx.Client, url: str, token: str) -> int:
    headers = {"authorization": f"Bearer {token}", "accept": "application/json", "mcp-protocol-version": "2026-07-28",
               "mcp-method": "tools/call", "mcp-name": "ping"}
    return http.post(url, json=PING, headers=headers).status_code


def revoke_cli(store: Path, caller: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcptrace", "token", "revoke", caller, "--store", str(store), *extra],
                          capture_output=True, text=True, env=subprocess_env(), timeout=60)


class TightLoop:
    """A caller calling `url` back to back on one connection, noting when each request started."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.calls: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                self.calls.append((started, ping(http, self.url, self.token)))

    def __enter__(self) -> TightLoop:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not any(status == 200 for _, status in self.calls):
            assert time.monotonic() < deadline and self._thread.is_alive(), "the token was never accepted"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def admitted_after(self, moment: float) -> list[float]:
        """Seconds after `moment` at which admitted requests had started."""
        return [started - moment for started, status in self.calls if started > moment and status == 200]

    def carry_on(self, requests: int = 20) -> None:
        """Until `requests` more have been answered (so the loop ran on past the revocation)."""
        target = len(self.calls) + requests
        deadline = time.monotonic() + 15
        while len(self.calls) < target and time.monotonic() < deadline:
            time.sleep(0.01)


def test_twenty_revocations_under_a_tight_loop_admit_nothing_that_starts_after_the_command(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.add("warmup", tenant="acme")
    late: list[float] = []
    with running_server(tmp_path / "server", "--tokens", str(store.path), *UNLIMITED) as srv:
        for i in range(ROUNDS):
            token = store.add(f"looper-{i}", tenant="acme")
            with TightLoop(srv.url, token) as loop:
                done = revoke_cli(store.path, f"looper-{i}")
                returned = time.monotonic()
                assert done.returncode == 0, done.stderr
                loop.carry_on()
            late += loop.admitted_after(returned)
            assert loop.calls[-1][1] == 401
    assert late == [], f"{len(late)} requests admitted after the command returned, up to {max(late) * 1000:.0f} ms"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Redis, list[RunningProcess], list[Path]]]:
    """Two replicas, each with its own copy of the token store, sharing one Redis."""
    work = tmp_path_factory.mktemp("pair")
    with ExitStack() as stack:
        redis = Redis(work / "redis")
        redis.start()
        stack.callback(redis.stop)
        stores = [work / "tokens-r1.json", work / "tokens-r2.json"]
        TokenStore(stores[0]).add("warmup", tenant="acme")
        shutil.copyfile(stores[0], stores[1])
        replicas = [
            stack.enter_context(running_server(work / f"replica-{i}", "--tokens", str(store), "--redis-url",
                                               redis.url, "--replica-id", f"r{i + 1}", *UNLIMITED))
            for i, store in enumerate(stores)
        ]
        for replica in replicas:  # each replica has synchronised its copy of the revocations
            wait_for_log(replica.log_file, lambda r: r["event"] == "revocation_feed" and r["status"] == "success")
        yield redis, replicas, stores


def add_everywhere(stores: list[Path], caller: str) -> str:
    token = TokenStore(stores[0]).add(caller, tenant="acme")
    tmp = stores[1].with_name(stores[1].name + ".new")
    shutil.copyfile(stores[0], tmp)
    os.replace(tmp, stores[1])
    return token


def test_a_revocation_through_redis_holds_on_the_other_replica_from_the_next_request(
    pair: tuple[Redis, list[RunningProcess], list[Path]],
) -> None:
    redis, replicas, stores = pair
    commands = redis_client.Redis.from_url(redis.url)
    commands.config_resetstat()
    late: list[float] = []
    for i in range(ROUNDS):
        token = add_everywhere(stores, f"roamer-{i}")
        with TightLoop(replicas[1].url, token) as loop:  # replica 2's own store never loses the token
            done = revoke_cli(stores[0], f"roamer-{i}", "--redis-url", redis.url)
            returned = time.monotonic()
            assert done.returncode == 0, done.stderr
            assert "confirmed by 2 replica(s)" in done.stdout
            loop.carry_on()
        late += loop.admitted_after(returned)
        assert loop.calls[-1][1] == 401
    assert late == [], f"{len(late)} requests admitted after the command returned, up to {max(late) * 1000:.0f} ms"
    stats = commands.info("commandstats")
    assert "cmdstat_sismember" not in stats and "cmdstat_smembers" not in stats, "published, not polled"
    assert commands.pubsub_numsub("mcptrace:revocations") == [(b"mcptrace:revocations", 2)]


def test_with_redis_unreachable_the_command_says_so_in_one_line_and_changes_nothing(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.add("stays", tenant="acme")
    before = store.path.read_bytes()
    with running_server(tmp_path / "server", "--tokens", str(store.path)) as srv, httpx.Client(timeout=10) as http:
        done = revoke_cli(store.path, "stays", "--redis-url", "redis://127.0.0.1:1/0")
        assert done.returncode == 1 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr
        assert "Redis at redis://127.0.0.1:1/0" in lines[0] and "nothing was changed" in lines[0]
        assert store.path.read_bytes() == before, "all or nothing: the store is as it was"
        assert ping(http, srv.url, token) == 200
        missing = revoke_cli(store.path, "nobody")
        assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no tokens for nobody" in missing.stderr


def test_a_replica_that_cannot_confirm_is_named_and_applies_the_revocation_when_it_can(
    pair: tuple[Redis, list[RunningProcess], list[Path]],
) -> None:
    redis, replicas, stores = pair
    token = add_everywhere(stores, "while-frozen")
    with httpx.Client(timeout=10) as http:
        eventually(lambda: _assert_status(ping(http, replicas[1].url, token), 200))
        frozen = replicas[1].process
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            done = revoke_cli(stores[0], "while-frozen", "--redis-url", redis.url, "--confirm-timeout", "1")
            took = time.monotonic() - started
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert "r2" in done.stderr and "did not confirm" in done.stderr and done.stderr.count("\n") == 1
        assert took < 15
        assert ping(http, replicas[0].url, token) == 401, "the replica that confirmed refuses at once"
        eventually(lambda: _assert_status(ping(http, replicas[1].url, token), 401), timeout=10)


def _assert_status(status: int, wanted: int) -> None:
    assert status == wanted
