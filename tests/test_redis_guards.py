"""Several replicas share limits, suspensions and revocations through a real Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest

from mcptrace.guards import Limit, LimitPolicy, RateLimiter, RedisBackend
from mcptrace.guards._tokens import TokenStore
from mcptrace.testing import RunningProcess, running_server
from tests.guard_clients import RawSession, revoke

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (scripts/test.sh)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                redis.Redis.from_url(url, socket_timeout=0.5).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


POLICY = LimitPolicy(
    caller=Limit(1, 10),
    tools={"run_report": Limit(0.1, 3)},
    default_tool=Limit(100, 100),
    suspend_after=4,
    suspend_window=10,
    suspend_seconds=1,
)


def test_two_replicas_draw_from_one_bucket(redis_url: str) -> None:
    async def main() -> None:
        a = RateLimiter(POLICY, backend=RedisBackend(redis_url, prefix="t1"))
        b = RateLimiter(POLICY, backend=RedisBackend(redis_url, prefix="t1"))
        try:
            results = [await (a if i % 2 else b).check("agent", "run_report") for i in range(4)]
            assert [r.allowed for r in results] == [True, True, True, False]
            assert results[-1].scope == "tool" and 9000 < results[-1].retry_after_ms <= 10_000
        finally:
            await a.backend.aclose()
            await b.backend.aclose()

    anyio.run(main)


def test_the_decision_is_atomic_under_concurrent_replicas(redis_url: str) -> None:
    # A refill slow enough that no token comes back while the calls run, however busy the machine.
    policy = replace(POLICY, caller=Limit(0.01, 10))

    async def main() -> int:
        backends = [RedisBackend(redis_url, prefix="t2") for _ in range(4)]
        limiters = [RateLimiter(policy, backend=b) for b in backends]
        allowed = 0

        async def one(i: int) -> None:
            nonlocal allowed
            if (await limiters[i % 4].check("agent", "ping")).allowed:
                allowed += 1

        try:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for i in range(60):
                        tg.start_soon(one, i)
        finally:
            for b in backends:
                await b.aclose()
        return allowed

    assert anyio.run(main) == 10  # exactly the caller bucket, however the calls interleave


def test_a_suspension_is_shared_and_expires_in_redis(redis_url: str) -> None:
    async def main() -> None:
        a = RateLimiter(POLICY, backend=RedisBackend(redis_url, prefix="t3"))
        b = RateLimiter(POLICY, backend=RedisBackend(redis_url, prefix="t3"))
        try:
            for _ in range(3):
                await a.check("agent", "run_report")
            scopes = [(await a.check("agent", "run_report")).scope for _ in range(4)]
            assert scopes == ["tool", "tool", "tool", "suspended"]
            other = await b.check("agent", "ping")
            assert other.scope == "suspended" and 0 < other.retry_after_ms <= 1000
            await anyio.sleep(other.retry_after_ms / 1000 + 0.05)
            assert (await b.check("agent", "ping")).allowed
        finally:
            await a.backend.aclose()
            await b.backend.aclose()

    anyio.run(main)


@pytest.fixture
def replicas(tmp_path: Path, redis_url: str) -> Iterator[tuple[RunningProcess, RunningProcess, Path, str]]:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.add("shared-agent", tenant="acme")
    copy = tmp_path / "replica-b-tokens.json"
    shutil.copy(store.path, copy)  # replica B has its own copy of the store
    common = ["--redis-url", redis_url, "--rate-limit-caller", "0.05/3", "--suspend-after", "50"]
    with (
        running_server(tmp_path / "a", "--tokens", str(store.path), *common) as a,
        running_server(tmp_path / "b", "--tokens", str(copy), *common) as b,
    ):
        yield a, b, store.path, token


def test_replicas_share_the_callers_limit_and_its_revocation(
    replicas: tuple[RunningProcess, RunningProcess, Path, str],
    redis_url: str,
) -> None:
    a, b, store, token = replicas

    async def main() -> None:
        with anyio.fail_after(30):
            async with httpx.AsyncClient(timeout=10) as http:
                on_a = await RawSession(http, a.url, token).open()  # initialize + initialized: 2 of 3 tokens
                on_b = await RawSession(http, b.url, token).open()  # initialize takes the last one
                assert on_b.headers.get("mcp-session-id")
                refused = await on_b.call("ping")
                assert refused.status_code == 429
                assert refused.json()["error"]["data"]["scope"] == "caller"
                assert (await on_a.call("ping")).status_code == 429

    anyio.run(main)
    revoke(store, "shared-agent", "--redis-url", redis_url)
    r = httpx.post(
        b.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"authorization": f"Bearer {token}", "accept": "application/json"},
        timeout=10,
    )
    assert r.status_code == 401  # B's own store file still lists the token; Redis says it is revoked
