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


def end_to_end(n: int, rounds: int = 8) -> None:
    """Sequential `tools/call ping` over HTTP: a server without auth (baseline) vs. one with tokens.

    The two servers run side by side and are measured in alternating rounds, so
    a change in machine load hits both alike; medians of the rounds are compared.
    """
    import httpx

    from mcptrace.testing import initialize_message, running_server

    init = initialize_message("bench")
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ping", "arguments": {}}}
    limits = ["--rate-limit-caller", "1e6/1e6", "--rate-limit-tools", "*=1e6/1e6"]
    per_round = max(1, n // rounds)
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=10) as http:
        store = TokenStore(Path(tmp) / "tokens.json")
        token = store.add("bench", tenant="acme")
        with (
            running_server(Path(tmp) / "plain", *limits) as plain,
            running_server(Path(tmp) / "auth", "--tokens", str(store.path), *limits) as guarded,
        ):
            sessions: dict[str, tuple[str, dict[str, str]]] = {}
            for name, url, secret in (("plain", plain.url, None), ("auth", guarded.url, token)):
                headers = {"accept": "application/json"}
                if secret:
                    headers["authorization"] = f"Bearer {secret}"
                r = http.post(url, json=init, headers=headers)
                headers |= {
                    "mcp-session-id": r.headers["mcp-session-id"],
                    "mcp-protocol-version": "2025-11-25",
                }
                sessions[name] = (url, headers)
            timings: dict[str, list[float]] = {"plain": [], "auth": []}
            for i in range(rounds + 1):
                for name in ("plain", "auth") if i % 2 else ("auth", "plain"):
                    url, headers = sessions[name]
                    start = time.perf_counter()
                    for _ in range(per_round):
                        assert http.post(url, json=call, headers=headers).status_code == 200
                    if i:  # round 0 warms both up
                        timings[name].append((time.perf_counter() - start) / per_round * 1e6)
    base, auth = statistics.median(timings["plain"]), statistics.median(timings["auth"])
    print(f"ping over HTTP, no auth:              {base:8.0f} us  (baseline)")
    print(f"ping over HTTP, token + admission:    {auth:8.0f} us  ({auth / base:.2f}x)")


if __name__ == "__main__":
    main()
