"""Two `mcptrace serve` replicas behind a real nginx, sharing guard state through a real Redis.

nginx (Debian's) round-robins sessionless (2026-07-28) requests over both
replicas on loopback ports. Each replica has its own copy of the token store,
so anything one replica learns reaches the other only through Redis: a flood
spread over both is limited as one caller, a token revoked through one is
refused by the other on the next request, and both survive a replica restart.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mcptrace.testing import RunningProcess, running_server
from tests.guard_clients import add_token, revoke
from tests.proxies import free_port, require, running_balancer
from tests.redis_server import Redis

RATE, BURST = 2, 6


@dataclass
class Cluster:
    proxy_url: str
    redis: Redis
    stores: list[Path]
    replicas: list[RunningProcess]
    ports: list[int]
    workdir: Path
    stack: ExitStack

    def start_replica(self, i: int) -> RunningProcess:
        args = ("--port", str(self.ports[i]), "--tokens", str(self.stores[i]), "--redis-url", self.redis.url,
                "--rate-limit-caller", f"{RATE}/{BURST}",
                "--rate-limit-tools", "*=1000/1000,get_config=0.01/2",
                "--suspend-after", "1000")
        replica = self.stack.enter_context(running_server(self.workdir / f"replica-{i}-{time.monotonic_ns()}",
                                                          *args))
        if len(self.replicas) > i:
            self.replicas[i] = replica
        else:
            self.replicas.append(replica)
        return replica

    def add_token(self, caller: str) -> str:
        token = add_token(self.stores[0], caller, "acme")
        for store in self.stores[1:]:
            shutil.copyfile(self.stores[0], store)
        return token

    def wait_accepted(self, token: str) -> None:
        """Until every replica has reloaded its store and knows the token (a call each)."""
        deadline = time.monotonic() + 15
        for replica in self.replicas:
            while call(replica.url, token).status_code == 401:
                assert time.monotonic() < deadline, "the token store was not reloaded"
                time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require("nginx")  # skip before starting anything
    work = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        redis = Redis(work / "redis")
        redis.start()
        stack.callback(redis.stop)
        stores = [work / "tokens-a.json", work / "tokens-b.json"]
        c = Cluster("", redis, stores, [], [free_port(), free_port()], work, stack)
        c.add_token("warmup")
        c.start_replica(0)
        c.start_replica(1)
        c.proxy_url = stack.enter_context(running_balancer(work / "nginx", c.ports))
        yield c


def call_request(url: str, token: str, tool: str) -> dict[str, Any]:
    """One sessionless tools/call, which any replica can answer, as `httpx.Request` arguments."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": {}, "_meta": meta}}
    headers = {"accept": "application/json", "authorization": f"Bearer {token}",
               "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": tool}
    return {"method": "POST", "url": url, "json": body, "headers": headers}


def call(url: str, token: str, tool: str = "ping") -> httpx.Response:
    return httpx.request(**call_request(url, token, tool), timeout=15)


async def flood(url: str, token: str, n: int) -> list[int]:
    """`n` calls at once, as a looping agent with many connections sends them."""
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=30) as http:

        async def one() -> None:
            request = call_request(url, token, "ping")
            statuses.append((await http.send(http.build_request(**request))).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
    return statuses


def served_by(cluster: Cluster, caller: str) -> Counter[int]:
    """How many of `caller`'s requests each replica logged."""
    counts: Counter[int] = Counter()
    for i, replica in enumerate(cluster.replicas):
        httpx.get(f"{replica.base_url}/health", timeout=10)
        for line in replica.log_file.read_text().splitlines():
            record = json.loads(line)
            if record.get("caller_id") == caller and record["event"] in ("response_sent", "tool_call", "rate_limited"):
                counts[i] += 1
    return counts


def test_a_flood_spread_over_both_replicas_is_limited_as_one_caller(cluster: Cluster) -> None:
    token = cluster.add_token("looper")
    cluster.wait_accepted(token)
    start = time.monotonic()
    statuses = Counter(anyio.run(flood, cluster.proxy_url, token, 40))
    elapsed = time.monotonic() - start
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] <= BURST + RATE * elapsed, f"separate limits would admit twice as many: {statuses}"
    assert statuses[429] > 0
    spread = served_by(cluster, "looper")
    assert spread[0] > 0 and spread[1] > 0, f"nginx spread the flood over both replicas: {spread}"


def test_a_token_revoked_through_one_replica_is_refused_by_the_other_at_once(cluster: Cluster) -> None:
    token = cluster.add_token("leaver")
    cluster.wait_accepted(token)
    assert call(cluster.replicas[1].url, token).status_code == 200
    revoke(cluster.stores[0], "leaver", "--redis-url", cluster.redis.url)  # replica 1's store is untouched
    assert call(cluster.replicas[1].url, token).status_code == 401
    assert {call(cluster.proxy_url, token).status_code for _ in range(4)} == {401}


def test_shared_state_survives_a_replica_restart(cluster: Cluster) -> None:
    revoked, limited = cluster.add_token("gone"), cluster.add_token("busy")
    cluster.wait_accepted(revoked)
    cluster.wait_accepted(limited)
    revoke(cluster.stores[0], "gone", "--redis-url", cluster.redis.url)  # replica 1's store still lists it
    for _ in range(3):  # get_config refills one call per 100 s: drained for the rest of the test
        call(cluster.replicas[0].url, limited, "get_config")
    old = cluster.replicas[1]
    old.process.terminate()
    assert old.process.wait(30) == 0
    restarted = cluster.start_replica(1)
    assert call(restarted.url, revoked).status_code == 401, "the revocation lives in Redis"
    assert call(restarted.url, limited, "get_config").status_code == 429, "so does the drained bucket"
