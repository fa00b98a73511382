"""Where rate-limit state lives: in this process, or in Redis so every replica shares it.

A backend makes the whole decision for one request in one step: is the caller
suspended; is there a token in each bucket the request draws from (the caller's,
and the (caller, tool) one for a tool call); if not, count the violation and
suspend after too many. The rule is written once, in `_decision`, with its Lua
form beside it: in Redis that step is a script, so it is atomic across replicas
and costs one round trip. Redis also holds revoked credential
keys (`_revocations` keeps every replica's copy of them in step).

Redis is never trusted to answer quickly: each call has a deadline
(`MCPTRACE_REDIS_TIMEOUT`, default 50 ms) and goes through a circuit breaker of
its own (the `redis` breaker). A call that misses its deadline, fails, or is
refused by the open breaker raises `BackendUnavailable` at once; the caller
decides what that means for its guard (see `RateLimiter`).

The deadline counts Redis's time, not this process's backlog: when the event
loop itself was late to wake the waiting request (a burst of requests keeps it
busy), the call gets that lateness on top, so a busy server does not take its
own slowness for Redis's. A call given up on is not cancelled mid-command (that
would cost its connection): it finishes in the background, bounded by the
socket timeout, and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

from mcptrace._errors import MissingDependencyError
from mcptrace._install import install_hint
from mcptrace.guards._breaker import CircuitBreaker
from mcptrace.guards._decision import (
    DECIDE_LUA,
    count_violation,
    refill,
    refusing_bucket,
    suspension_left_ms,
    wait_for_token,
)
from mcptrace.guards._limits import (
    ALLOWED,
    SCOPE_CALLER,
    SCOPE_SUSPENDED,
    SCOPE_TOOL,
    Decision,
    Limit,
    LimitPolicy,
)

T = TypeVar("T")

#: Seconds a Redis call may take by default (`MCPTRACE_REDIS_TIMEOUT`).
DEFAULT_REDIS_TIMEOUT = 0.05
#: Seconds a call given up on may still run in the background before its socket times out.
BACKGROUND_TIMEOUT = 1.0
#: Lateness of the event loop granted on top of the deadline, at most.
MAX_LOOP_LATENESS = 0.5


class BackendUnavailable(Exception):
    """The shared state could not be reached in time (or its breaker is open)."""


def buckets_for(
    policy: LimitPolicy, tool: str | None, *, include_caller: bool
) -> list[tuple[str, str, Limit]]:
    """(scope, bucket name, limit) of each bucket a request draws from."""
    buckets = [(SCOPE_CALLER, "bucket", policy.caller)] if include_caller else []
    if tool is not None:
        buckets.append((SCOPE_TOOL, f"tool:{tool}", policy.for_tool(tool)))
    return buckets


class LimitBackend(Protocol):
    async def decide(
        self, caller: str, tool: str | None, policy: LimitPolicy, *, include_caller: bool = True
    ) -> Decision: ...

    async def revoke(self, keys: Iterable[str]) -> None: ...

    async def is_revoked(self, key: str) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """Single-process state with an injectable monotonic clock (tests drive time by hand)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._violations: dict[str, tuple[int, float | None]] = {}
        self._suspended_until: dict[str, float] = {}
        self._revoked: set[str] = set()

    async def decide(
        self, caller: str, tool: str | None, policy: LimitPolicy, *, include_caller: bool = True
    ) -> Decision:
        return self.decide_now(caller, tool, policy, include_caller=include_caller)

    def decide_now(
        self, caller: str, tool: str | None, policy: LimitPolicy, *, include_caller: bool = True
    ) -> Decision:
        """The rule of `_decision`, on this process's state."""
        now = self.clock()
        left = suspension_left_ms(self._suspended_until.get(caller), now)
        if left is not None:
            return Decision(False, SCOPE_SUSPENDED, left)
        self._suspended_until.pop(caller, None)
        buckets = buckets_for(policy, tool, include_caller=include_caller)
        state = self._buckets
        levels = [refill(state.get((caller, name)), limit, now) for _, name, limit in buckets]
        waits = [wait_for_token(level, limit) for level, (_, _, limit) in zip(levels, buckets, strict=True)]
        if all(w == 0 for w in waits):
            if len(self._buckets) >= self.max_buckets:
                self._prune(now, policy)
            for level, (_, name, _) in zip(levels, buckets, strict=True):
                self._buckets[(caller, name)] = (level - 1, now)
            return ALLOWED
        count, started = self._violations.get(caller, (0, None))
        count, started = count_violation(count, started, now, policy)
        if count >= policy.suspend_after:
            self._violations.pop(caller, None)
            self._suspended_until[caller] = now + policy.suspend_seconds
            return Decision(
                False, SCOPE_SUSPENDED, math.ceil(policy.suspend_seconds * 1000), suspended_now=True
            )
        self._violations[caller] = (count, started)
        worst = refusing_bucket(waits)
        return Decision(False, buckets[worst][0], math.ceil(waits[worst] * 1000))

    def _prune(self, now: float, policy: LimitPolicy) -> None:
        """Forget buckets that have refilled completely: they hold nothing a fresh bucket would not."""
        full_after = max(
            policy.caller.burst / policy.caller.rate,
            *(lim.burst / lim.rate for lim in (*policy.tools.values(), policy.default_tool)),
        )
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}

    async def revoke(self, keys: Iterable[str]) -> None:
        self._revoked.update(keys)

    async def is_revoked(self, key: str) -> bool:
        return key in self._revoked

    async def aclose(self) -> None:
        return None


class RedisBackend:
    """Shared state in Redis (the `redis` extra). Time is Redis's own clock, the same for every replica.

    `breaker` (the server passes its `redis` breaker) turns a struggling Redis
    into immediate `BackendUnavailable`s instead of one deadline per request.
    `clock` replaces Redis's clock (seconds, monotonic): for tests that drive
    time by hand and compare this backend with `MemoryBackend` on one clock.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "mcptrace",
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        aioredis = import_redis()
        self.url = url
        self.clock = clock
        self.prefix = prefix
        self.timeout = timeout
        self.breaker = breaker
        self._client: Any = aioredis.from_url(url, socket_timeout=max(timeout, BACKGROUND_TIMEOUT),
                                              socket_connect_timeout=max(timeout, BACKGROUND_TIMEOUT))
        self._decide = self._client.register_script(DECIDE_LUA)
        self._background: set[asyncio.Task[Any]] = set()

    def _key(self, caller: str, part: str) -> str:
        return f"{self.prefix}:{{{caller}}}:{part}"

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """One Redis round trip within the deadline and through the breaker; `BackendUnavailable` otherwise."""
        breaker = self.breaker
        if breaker is not None and not breaker.admit():
            raise BackendUnavailable("redis: circuit open")
        ok = False
        try:
            task = asyncio.ensure_future(fn())
            loop = asyncio.get_running_loop()
            started = loop.time()
            deadline = started + self.timeout
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
                late = loop.time() - deadline  # how much later than asked this loop woke us
                if done or late <= 0.001 or loop.time() - started > self.timeout + MAX_LOOP_LATENESS:
                    break
                deadline = loop.time() + late  # the loop owes the call the time it took from it
            if not done:
                self._background.add(task)
                task.add_done_callback(_forget(self._background))
                raise BackendUnavailable(f"redis: no answer within {self.timeout * 1000:g} ms")
            result = task.result()
            ok = True
            return result
        except BackendUnavailable:
            raise
        except Exception as exc:  # connection refused, reset, a Redis error: all mean "not now"
            raise BackendUnavailable(f"redis: {type(exc).__name__}: {exc}"[:200]) from None
        finally:
            if breaker is not None:
                breaker.record(ok)

    async def warm_up(self) -> None:
        """Connect and load the decision script before the first request needs them (errors are ignored)."""
        try:
            await asyncio.wait_for(self._client.script_load(DECIDE_LUA), BACKGROUND_TIMEOUT)
        except Exception:
            pass

    async def decide(
        self, caller: str, tool: str | None, policy: LimitPolicy, *, include_caller: bool = True
    ) -> Decision:
        buckets = buckets_for(policy, tool, include_caller=include_caller)
        keys = [self._key(caller, "suspension"), self._key(caller, "strikes")]
        keys += [self._key(caller, name) for _, name, _ in buckets]
        now = "" if self.clock is None else self.clock()
        args: list[float | str] = [policy.suspend_after, policy.suspend_window, policy.suspend_seconds, now]
        for _, _, limit in buckets:
            args += [limit.rate, limit.burst]
        allowed, index, retry_ms, suspended_now = await self.call(lambda: self._decide(keys=keys, args=args))
        if allowed:
            return ALLOWED
        scope = SCOPE_SUSPENDED if int(index) == 0 else buckets[int(index) - 1][0]
        return Decision(False, scope, int(retry_ms), bool(suspended_now))

    async def revoke(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            await self.call(lambda: self._client.sadd(f"{self.prefix}:revoked", *keys))

    async def is_revoked(self, key: str) -> bool:
        return bool(await self.call(lambda: self._client.sismember(f"{self.prefix}:revoked", key)))

    async def ping(self) -> None:
        """A round trip to Redis, for /health (deadline and breaker as for any call)."""
        await self.call(self._client.ping)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        try:
            await self._client.aclose()
        except Exception:
            pass


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so it is not reported as never retrieved

    return done


def import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise MissingDependencyError(f"the Redis backend needs the redis package: {install_hint('redis')}") from None
    return aioredis
