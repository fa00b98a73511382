"""The guards under real failures: an upstream that dies, stalls or flaps, and Redis killed mid-run.

The upstream is the real `mcptrace upstream`, switched through its
`/admin/faults` endpoint; Redis is Debian's `redis-server` on a loopback port.
Each test asserts what a caller sees, what `/health` says, and that the server
recovers by itself once the dependency is back.

Redis policy (documented in docs/operations.md): every guard fails open. While
Redis is unreachable rate limits admit calls (counted as backend errors) and
revocations fall back to the local token store; `/health` says degraded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest

from mcptrace.testing import RunningProcess, running_server, running_upstream
from tests.guard_clients import RawSession, add_token
from tests.helpers import UNLIMITED, eventually
from tests.redis_server import Redis

T = TypeVar("T")
FAST_BREAKER = {
    "MCPTRACE_HEALTH_CACHE_SECONDS": "0", "MCPTRACE_BREAKER_COOLDOWN": "2", "MCPTRACE_BREAKER_MIN_CALLS": "3",
    "MCPTRACE_BREAKER_WINDOW": "10", "MCPTRACE_UPSTREAM_TIMEOUT": "1.5",
}



def health(server: RunningProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.base_url}/health", timeout=10).json()
    return body


def fetch(server: RunningProcess, key: str = "k1") -> tuple[dict[str, Any], float]:
    """One fetch_upstream call on the sessionless wire; (result, seconds it took)."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "fetch_upstream", "arguments": {"key": key}, "_meta": meta}}
    headers = {"accept": "application/json", "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
               "mcp-name": "fetch_upstream"}
    start = time.monotonic()
    r = httpx.post(server.url, json=body, headers=headers, timeout=15)
    elapsed = time.monotonic() - start
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["result"]
    return result, elapsed


def set_faults(upstream: RunningProcess, **faults: Any) -> None:
    r = httpx.post(f"{upstream.base_url}/admin/faults", json=faults, timeout=10)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProcess, RunningProcess]]:
    """One server and upstream for the breaker tests; each test leaves the breaker closed again."""
    tmp = tmp_path_factory.mktemp("breaker")
    with running_upstream(tmp / "upstream") as up, running_server(
        tmp / "server", "--upstream-url", up.base_url, *UNLIMITED, env=FAST_BREAKER
    ) as srv:
        yield srv, up


def open_breaker_then_recover(srv: RunningProcess, up: RunningProcess, **fault: Any) -> None:
    eventually(lambda: assert_ok(fetch(srv)[0]))
    set_faults(up, **fault)
    for _ in range(3):
        result, _ = fetch(srv)
        assert result["isError"]

    def fails_fast() -> None:
        result, elapsed = fetch(srv)
        assert result["isError"] and "circuit open" in result["content"][0]["text"], result
        assert elapsed < 1.0, "an open breaker answers at once, without waiting out the 1.5 s timeout"

    eventually(fails_fast)
    body = health(srv)
    assert body["status"] == "degraded", body
    # The cooldown may already be over: an open breaker then shows as half-open.
    assert body["checks"]["breakers"]["states"]["upstream"] in ("open", "half_open"), body

    set_faults(up, down=False, latency_ms=0, fail_rate=0)

    def closed_again() -> None:
        result, _ = fetch(srv)
        assert not result["isError"], result
        body = health(srv)
        assert body["checks"]["breakers"]["states"]["upstream"] == "closed", body
        assert body["status"] == "healthy", body

    eventually(closed_again)
    transitions = [(r.get("message"), r.get("service")) for r in read_events(srv, "breaker_state_changed")]
    assert len(transitions) >= 3, transitions  # closed -> open -> half-open -> closed


def assert_ok(result: dict[str, Any]) -> None:
    assert not result["isError"], result


def read_events(srv: RunningProcess, event: str) -> list[dict[str, Any]]:
    import json

    httpx.get(f"{srv.base_url}/health", timeout=10)
    lines = srv.log_file.read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_an_upstream_that_is_down_opens_the_breaker_which_closes_after_recovery(pair: Any) -> None:
    open_breaker_then_recover(*pair, down=True)


def test_an_upstream_slower_than_its_timeout_opens_the_breaker(pair: Any) -> None:
    srv, up = pair
    open_breaker_then_recover(srv, up, latency_ms=3000)
    assert any(r.get("error") == "timeout" for r in read_events(srv, "downstream_call"))


def test_a_flapping_upstream_opens_the_breaker_and_it_settles_once_stable(pair: Any) -> None:
    open_breaker_then_recover(*pair, fail_rate=1.0)
    srv, up = pair
    set_faults(up, fail_rate=0.5)  # every other call fails: the breaker keeps tripping, never hangs
    outcomes = [fetch(srv)[0]["isError"] for _ in range(12)]
    assert any(outcomes)
    set_faults(up, fail_rate=0)

    def settled() -> None:
        assert not fetch(srv)[0]["isError"]
        assert health(srv)["checks"]["breakers"]["states"]["upstream"] == "closed"

    eventually(settled)


# -- Redis killed and restarted ---------------------------------------------------------------------

@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    r = Redis(tmp_path / "redis")
    r.start()
    yield r
    r.stop()


def test_redis_killed_mid_run_keeps_limits_per_replica_and_shared_ones_return_with_it(
    tmp_path: Path, redis_server: Redis
) -> None:
    store = tmp_path / "tokens.json"
    token = add_token(store, "looper", "acme")
    args = ("--tokens", str(store), "--redis-url", redis_server.url, "--rate-limit-caller", "5/5",
            "--rate-limit-tools", "*=1000/1000", "--suspend-after", "1000")
    with running_server(tmp_path / "server", *args, env={"MCPTRACE_HEALTH_CACHE_SECONDS": "0"}) as srv:

        async def burst(n: int) -> list[int]:
            async with httpx.AsyncClient(timeout=15) as http:
                s = await RawSession(http, srv.url, token).open()
                return [(await s.call("ping")).status_code for _ in range(n)]

        assert 429 in anyio.run(burst, 20), "with Redis up, the shared limit applies"
        assert health(srv)["checks"]["redis"]["status"] == "healthy"

        redis_server.kill()
        statuses = anyio.run(burst, 20)
        assert set(statuses) == {200, 429}, "with Redis gone, this replica's own buckets limit, never 5xx"
        body = health(srv)
        assert body["status"] == "degraded" and body["checks"]["redis"]["status"] != "healthy", body

        redis_server.start()

        def limits_back() -> None:
            assert health(srv)["checks"]["redis"]["status"] == "healthy"
            assert 429 in anyio.run(burst, 20)

        eventually(limits_back)
        assert "Traceback" not in srv.stderr()


def test_each_refusal_by_the_guards_is_recorded_once_as_refused(tmp_path: Path) -> None:
    """401 and 429 are `request_refused` lines written by the guard that refused, never anything else."""
    import json

    store = tmp_path / "tokens.json"
    token = add_token(store, "counted", "acme")
    args = ("--tokens", str(store), "--rate-limit-caller", "2/2", "--suspend-after", "1000")
    with running_server(tmp_path / "server", *args) as srv:
        unauthorised = httpx.post(srv.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10)
        assert unauthorised.status_code == 401

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=15) as http:
                s = await RawSession(http, srv.url, token).open()
                return [await s.call("ping") for _ in range(6)]

        limited = [r.headers["x-request-id"] for r in anyio.run(burst) if r.status_code == 429]
        assert limited
        refused = {unauthorised.headers["x-request-id"], *limited}

        def recorded_once() -> None:
            httpx.get(f"{srv.base_url}/health", timeout=10)
            records = [json.loads(line) for line in srv.log_file.read_text().splitlines()]
            assert not [r for r in records if r.get("mcp_request_id") in refused and r["event"] != "request_refused"]
            lines = [r for r in records if r["event"] == "request_refused"]
            assert [r["refusal_reason"] for r in lines if r["mcp_request_id"] == unauthorised.headers["x-request-id"]
                    ] == ["unauthenticated"]
            limits = [r for r in lines if r.get("caller_id") == "counted"]
            assert {r["refusal_reason"] for r in limits} == {"rate_limited"}
            assert sum(r.get("count", 1) for r in limits) == len(limited), "every refusal counted, once"
            assert limits[0]["mcp_request_id"] == limited[0]
            assert limits[-1].get("last_request_id", limits[-1]["mcp_request_id"]) == limited[-1]

        eventually(recorded_once)
