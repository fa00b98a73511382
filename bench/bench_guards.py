"""What the guards cost per request: `python bench/bench_guards.py` (add `--redis-url URL` for Redis).

Each figure is a ratio against a baseline measured in the same run, so the
numbers compare across machines: token lookup with the throttled reload check
vs. a stat() on every request, and a rate-limit decision vs. the lookup.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from mcptrace.guards import Limit, LimitPolicy, MemoryBackend, RateLimiter, TokenStore


def per_call_ns(fn: Callable[[], object], n: int = 50_000, rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - start) / n)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    parser.add_argument(
        "--e2e",
        type=int,
        default=300,
        metavar="N",
        help="requests per end-to-end run against real servers (0 to skip)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.json"
        admin = TokenStore(path)
        tokens = [admin.add(f"agent-{i}", tenant="acme") for i in range(200)]
        throttled = TokenStore(path, reload_interval=0.25)
        every = TokenStore(path, reload_interval=0.0)
        token = tokens[100]
        stat_ns = per_call_ns(lambda: os.stat(path))
        throttled_ns = per_call_ns(lambda: throttled.authenticate(token))
        every_ns = per_call_ns(lambda: every.authenticate(token))
    print(f"os.stat of the store:                {stat_ns:8.0f} ns")
    print(f"token lookup, reload check throttled: {throttled_ns:8.0f} ns  (baseline)")
    print(f"token lookup, stat on every request:  {every_ns:8.0f} ns  ({every_ns / throttled_ns:.2f}x)")

    policy = LimitPolicy(caller=Limit(1e9, 1e9), default_tool=Limit(1e9, 1e9))
    memory = MemoryBackend()
    decide_ns = per_call_ns(lambda: memory.decide_now("agent", "ping", policy))
    print(
        f"rate-limit decision, in memory:       {decide_ns:8.0f} ns  ({decide_ns / throttled_ns:.2f}x lookup)"
    )

    if args.redis_url:
        from mcptrace.guards import RedisBackend

        async def redis_round_trips() -> float:
            limiter = RateLimiter(policy, backend=RedisBackend(args.redis_url, prefix="bench"))
            n = 2000
            start = time.perf_counter_ns()
            for _ in range(n):
                await limiter.check("agent", "ping")
            await limiter.backend.aclose()
            return (time.perf_counter_ns() - start) / n

        redis_ns = anyio.run(redis_round_trips)
        print(
            f"rate-limit decision, Redis Lua:       {redis_ns:8.0f} ns  ({redis_ns / decide_ns:.0f}x memory)"
        )

    if args.e2e:
        end_to_end(args.e2e)


def end_to_end(n: int) -> None:
    """Sequential `tools/call ping` over HTTP: a server without auth (baseline) vs. with tokens."""
    import httpx

    from mcptrace.testing import running_server

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    }
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ping", "arguments": {}}}

    def run(url: str, token: str | None) -> float:
        headers = {"accept": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
        with httpx.Client(timeout=10) as http:
            r = http.post(url, json=init, headers=headers)
            headers |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            for _ in range(20):
                http.post(url, json=call, headers=headers)
            start = time.perf_counter()
            for _ in range(n):
                assert http.post(url, json=call, headers=headers).status_code == 200
            return (time.perf_counter() - start) / n * 1e6

    limits = ["--rate-limit-caller", "1e6/1e6", "--rate-limit-tools", "*=1e6/1e6"]
    with tempfile.TemporaryDirectory() as tmp:
        store = TokenStore(Path(tmp) / "tokens.json")
        token = store.add("bench", tenant="acme")
        with (
            running_server(Path(tmp) / "plain", *limits) as plain,
            running_server(Path(tmp) / "auth", "--tokens", str(store.path), *limits) as guarded,
        ):
            base = run(plain.url, None)
            auth = run(guarded.url, token)
            base_again = run(plain.url, None)
    base = (base + base_again) / 2
    print(f"ping over HTTP, no auth:              {base:8.0f} us  (baseline)")
    print(f"ping over HTTP, token + admission:    {auth:8.0f} us  ({auth / base:.2f}x)")


if __name__ == "__main__":
    main()
