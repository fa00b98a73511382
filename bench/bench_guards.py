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


if __name__ == "__main__":
    main()
