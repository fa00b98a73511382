"""Two `mcptrace serve` replicas behind real nginx and Caddy, sharing guard state through a real Redis.

The proxies run the shipped replica configurations (`deploy/nginx/mcptrace-replicas.conf`,
`deploy/caddy/Caddyfile.replicas`) over TLS: a request naming a session goes to
the replica that holds it (its id starts with the replica's `--replica-id`),
everything else to either. Each replica has its own copy of the token store, so
anything one replica learns reaches the other only through Redis: a flood spread
over both is limited as one caller, a token revoked through one is refused by
the other on the next request, and both survive a replica restart.
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

from mcptrace.testing import RunningProcess, initialize_message, running_server
from tests.guard_clients import add_token, revoke
from tests.helpers import eventually, read_log, wait_for_log
from tests.proxies import (
    Certificate,
    free_port,
    make_certificate,
    require,
    running_caddy_replicas,
    running_nginx_replicas,
)
from tests.redis_server import Redis

RATE, BURST = 2, 6


@dataclass
class Cluster:
    proxy_url: str
    cert: Certificate
    redis: Redis
    stores: list[Path]
    replicas: list[RunningProcess]
    ports: list[int]
    workdir: Path
    stack: ExitStack

    def start_replica(self, i: int) -> RunningProcess:
        args = ("--port", str(self.ports[i]), "--tokens", str(self.stores[i]), "--redis-url", self.redis.url,
                "--replica-id", f"r{i + 1}", "--rate-limit-caller", f"{RATE}/{BURST}",
                "--rate-limit-tools", "*=1000/1000,get_config=0.01/2",
                "--suspend-after", "1000")
        # A shared machine can stall Redis past the 50 ms default, and a replica then limits alone:
        # these tests are about the shared decision, so give Redis time.
        replica = self.stack.enter_context(running_server(self.workdir / f"replica-{i}-{time.monotonic_ns()}",
                                                          *args, env={"MCPTRACE_REDIS_TIMEOUT": "2"}))
        if len(self.replicas) > i:
            self.replicas[i] = replica
        else:
            self.replicas.append(replica)
        wait_for_log(replica.log_file, lambda r: r["event"] == "revocation_feed" and r["status"] == "success")
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
        cert = make_certificate(work)
        c = Cluster("", cert, redis, stores, [], [free_port(), free_port()], work, stack)
        c.add_token("warmup")
        c.start_replica(0)
        c.start_replica(1)
        proxy = stack.enter_context(running_nginx_replicas(
            work / "nginx", server_urls=[r.url for r in c.replicas], cert=cert))
        c.proxy_url = proxy.url
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


def call(url: str, token: str, tool: str = "ping", *, verify: str | bool = True) -> httpx.Response:
    return httpx.request(**call_request(url, token, tool), timeout=15, verify=verify)


async def flood(url: str, token: str, n: int, verify: str) -> list[int]:
    """`n` calls at once, as a looping agent with many connections sends them."""
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=30, verify=verify) as http:

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
            closing = record["event"] in ("response_sent", "tool_call", "request_refused")
            if record.get("caller_id") == caller and closing:
                counts[i] += record.get("count", 1)
    return counts


def test_a_flood_spread_over_both_replicas_is_limited_as_one_caller(cluster: Cluster) -> None:
    token = cluster.add_token("looper")
    cluster.wait_accepted(token)
    start = time.monotonic()
    statuses = Counter(anyio.run(flood, cluster.proxy_url, token, 40, str(cluster.cert.cert)))
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
    assert {call(cluster.proxy_url, token, verify=str(cluster.cert.cert)).status_code for _ in range(4)} == {401}


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


# -- sessions through the shipped replica configurations --------------------------------------------


@dataclass
class Routed:
    replicas: list[RunningProcess]
    proxies: dict[str, str]
    cert: Certificate
    token: str


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    """Two replicas without meaningful limits behind both shipped replica configurations."""
    work = tmp_path_factory.mktemp("routed")
    with ExitStack() as stack:
        redis = Redis(work / "redis")
        redis.start()
        stack.callback(redis.stop)
        store = work / "tokens.json"
        token = add_token(store, "roamer", "acme")
        replicas = [
            stack.enter_context(running_server(
                work / f"r{i}", "--tokens", str(store), "--redis-url", redis.url, "--replica-id", f"r{i}",
                "--rate-limit-caller", "1e6/1e6", "--rate-limit-tools", "*=1e6/1e6"))
            for i in (1, 2)
        ]
        cert = make_certificate(work)
        urls = [r.url for r in replicas]
        proxies = {"nginx": stack.enter_context(running_nginx_replicas(work / "nginx", server_urls=urls, cert=cert))}
        if shutil.which("caddy"):
            proxies["caddy"] = stack.enter_context(running_caddy_replicas(work / "caddy", server_urls=urls,
                                                                          cert=cert))
        yield Routed(replicas, {name: p.url for name, p in proxies.items()}, cert, token)


PROXIES = ["nginx", "caddy"]


def proxy_url(routed: Routed, name: str) -> str:
    if name not in routed.proxies:
        pytest.skip(f"{name} is not installed (scripts/test.sh installs it)")
    return routed.proxies[name]


def calls_served_by(routed: Routed, request_ids: set[str]) -> Counter[str]:
    """Which replica answered each of `request_ids` (by its own log, once every answer is in one)."""

    def count() -> Counter[str]:
        served: Counter[str] = Counter()
        for replica, name in zip(routed.replicas, ("r1", "r2"), strict=True):
            for record in read_log(replica.log_file):
                if record["event"] in ("tool_call", "response_sent") and record["mcp_request_id"] in request_ids:
                    served[name] += 1
        assert sum(served.values()) == len(request_ids)
        return served

    return eventually(count, timeout=10)


@pytest.mark.parametrize("proxy", PROXIES)
def test_handshake_era_sessions_go_back_to_the_replica_that_holds_them(routed: Routed, proxy: str) -> None:
    """Twenty sessions through the proxy, two calls each: 40 calls, 40 answers, and both replicas used."""
    url = proxy_url(routed, proxy)
    statuses: Counter[int] = Counter()
    holders: Counter[str] = Counter()
    with httpx.Client(verify=str(routed.cert.cert), timeout=15) as http:
        for _ in range(20):
            headers = {"authorization": f"Bearer {routed.token}", "accept": "application/json"}
            r = http.post(url, json=initialize_message("roamer"), headers=headers)
            assert r.status_code == 200, r.text
            session = r.headers["mcp-session-id"]
            holders[session.split(".", 1)[0]] += 1
            headers |= {"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
            http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
            for n in range(2):
                body = {"jsonrpc": "2.0", "id": n + 2, "method": "tools/call",
                        "params": {"name": "ping", "arguments": {}}}
                statuses[http.post(url, json=body, headers=headers).status_code] += 1
            assert http.delete(url, headers=headers).status_code == 200
    assert statuses == Counter({200: 40}), statuses
    assert set(holders) == {"r1", "r2"}, f"new sessions were spread over both replicas: {holders}"


@pytest.mark.parametrize("proxy", PROXIES)
def test_sessionless_calls_are_answered_by_either_replica(routed: Routed, proxy: str) -> None:
    url = proxy_url(routed, proxy)
    with httpx.Client(verify=str(routed.cert.cert), timeout=15) as http:
        answers = [http.request(**call_request(url, routed.token, "ping")) for _ in range(40)]
    assert Counter(r.status_code for r in answers) == Counter({200: 40})
    served = calls_served_by(routed, {r.headers["x-request-id"] for r in answers})
    assert sum(served.values()) == 40 and set(served) == {"r1", "r2"}, served


def test_a_session_id_the_proxy_does_not_route_is_one_that_does_not_exist(routed: Routed) -> None:
    url = proxy_url(routed, "nginx")
    headers = {"authorization": f"Bearer {routed.token}", "accept": "application/json",
               "mcp-session-id": "r9." + "0" * 32, "mcp-protocol-version": "2025-11-25"}
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ping", "arguments": {}}}
    r = httpx.post(url, json=body, headers=headers, verify=str(routed.cert.cert), timeout=15)
    assert r.status_code == 404 and r.json()["error"]["message"] == "Session not found"
