"""Where rate-limit state lives: in this process, or in Redis so every replica shares it.

A backend makes the whole decision for one request in one step: is the caller
suspended; are there tokens in its caller bucket and its (caller, tool) bucket;
if not, count the violation and suspend after too many. In Redis that step is a
Lua script, so it is atomic across replicas and costs one round trip. Redis
also holds revoked credential keys, so a revocation reaches every replica.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from mcptrace._errors import ConfigError
from mcptrace.guards._limits import (
    ALLOWED,
    SCOPE_CALLER,
    SCOPE_SUSPENDED,
    SCOPE_TOOL,
    Decision,
    Limit,
    LimitPolicy,
)


class LimitBackend(Protocol):
    async def decide(self, caller: str, tool: str | None, policy: LimitPolicy) -> Decision: ...

    async def revoke(self, keys: Iterable[str]) -> None: ...

    async def is_revoked(self, key: str) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryBackend:
    """Single-process state with an injectable monotonic clock (tests drive time by hand)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = 100_000) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[tuple[str, str | None], tuple[float, float]] = {}
        self._violations: dict[str, tuple[int, float]] = {}
        self._suspended_until: dict[str, float] = {}
        self._revoked: set[str] = set()

    async def decide(self, caller: str, tool: str | None, policy: LimitPolicy) -> Decision:
        return self.decide_now(caller, tool, policy)

    def decide_now(self, caller: str, tool: str | None, policy: LimitPolicy) -> Decision:
        now = self.clock()
        until = self._suspended_until.get(caller)
        if until is not None:
            if until > now:
                return Decision(False, SCOPE_SUSPENDED, math.ceil((until - now) * 1000))
            del self._suspended_until[caller]
        caller_key = (caller, None)
        caller_tokens = self._level(caller_key, policy.caller, now)
        waits = {SCOPE_CALLER: _wait(caller_tokens, policy.caller)}
        tool_limit = policy.for_tool(tool) if tool is not None else None
        tool_tokens = 0.0
        if tool_limit is not None:
            tool_tokens = self._level((caller, tool), tool_limit, now)
            waits[SCOPE_TOOL] = _wait(tool_tokens, tool_limit)
        if all(w == 0 for w in waits.values()):
            if len(self._buckets) >= self.max_buckets:
                self._prune(now, policy)
            self._buckets[caller_key] = (caller_tokens - 1, now)
            if tool_limit is not None:
                self._buckets[(caller, tool)] = (tool_tokens - 1, now)
            return ALLOWED
        count, started = self._violations.get(caller, (0, now))
        if now - started >= policy.suspend_window:
            count, started = 0, now
        count += 1
        if count >= policy.suspend_after:
            self._violations.pop(caller, None)
            self._suspended_until[caller] = now + policy.suspend_seconds
            return Decision(
                False, SCOPE_SUSPENDED, math.ceil(policy.suspend_seconds * 1000), suspended_now=True
            )
        self._violations[caller] = (count, started)
        scope = max(waits, key=lambda s: waits[s])
        return Decision(False, scope, math.ceil(waits[scope] * 1000))

    def _level(self, key: tuple[str, str | None], limit: Limit, now: float) -> float:
        tokens, last = self._buckets.get(key, (limit.burst, now))
        return min(limit.burst, tokens + max(0.0, now - last) * limit.rate)

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


def _wait(tokens: float, limit: Limit) -> float:
    return 0.0 if tokens >= 1 else (1 - tokens) / limit.rate


# KEYS: suspended, violations, caller bucket[, tool bucket]
# ARGV: caller rate, caller burst, tool rate, tool burst, suspend_after, window s, suspension s
_DECIDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return {0, 'suspended', left, 0} end
local function level(key, rate, burst)
  local v = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(v[1]) or burst
  local ts = tonumber(v[2]) or now
  return math.min(burst, tokens + math.max(0, now - ts) * rate)
end
local function store(key, tokens, rate, burst)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
local cr, cb = tonumber(ARGV[1]), tonumber(ARGV[2])
local ctok = level(KEYS[3], cr, cb)
local cwait, twait = 0, 0
if ctok < 1 then cwait = (1 - ctok) / cr end
local tr, tb, ttok
if #KEYS >= 4 then
  tr, tb = tonumber(ARGV[3]), tonumber(ARGV[4])
  ttok = level(KEYS[4], tr, tb)
  if ttok < 1 then twait = (1 - ttok) / tr end
end
if cwait == 0 and twait == 0 then
  store(KEYS[3], ctok - 1, cr, cb)
  if #KEYS >= 4 then store(KEYS[4], ttok - 1, tr, tb) end
  return {1, '', 0, 0}
end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[6]) * 1000)) end
if n >= tonumber(ARGV[5]) then
  local ms = math.ceil(tonumber(ARGV[7]) * 1000)
  redis.call('SET', KEYS[1], '1', 'PX', ms)
  redis.call('DEL', KEYS[2])
  return {0, 'suspended', ms, 1}
end
if twait >= cwait then return {0, 'tool', math.ceil(twait * 1000), 0} end
return {0, 'caller', math.ceil(cwait * 1000), 0}
"""


class RedisBackend:
    """Shared state in Redis (the `redis` extra). Time is Redis's own clock, the same for every replica."""

    def __init__(self, url: str, *, prefix: str = "mcptrace") -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigError(
                "the Redis backend needs the redis package: pip install 'mcptrace[redis]'"
            ) from None
        self.url = url
        self.prefix = prefix
        self._client: Any = aioredis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._decide = self._client.register_script(_DECIDE)

    def _key(self, caller: str, part: str) -> str:
        return f"{self.prefix}:{{{caller}}}:{part}"

    async def decide(self, caller: str, tool: str | None, policy: LimitPolicy) -> Decision:
        keys = [self._key(caller, "suspended"), self._key(caller, "violations"), self._key(caller, "bucket")]
        tool_limit = policy.for_tool(tool) if tool is not None else policy.default_tool
        if tool is not None:
            keys.append(self._key(caller, f"tool:{tool}"))
        args = [
            policy.caller.rate,
            policy.caller.burst,
            tool_limit.rate,
            tool_limit.burst,
            policy.suspend_after,
            policy.suspend_window,
            policy.suspend_seconds,
        ]
        allowed, scope, retry_ms, suspended_now = await self._decide(keys=keys, args=args)
        if allowed:
            return ALLOWED
        scope = scope.decode() if isinstance(scope, bytes) else str(scope)
        return Decision(False, scope, int(retry_ms), bool(suspended_now))

    async def revoke(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            await self._client.sadd(f"{self.prefix}:revoked", *keys)

    async def is_revoked(self, key: str) -> bool:
        return bool(await self._client.sismember(f"{self.prefix}:revoked", key))

    async def ping(self) -> None:
        """A round trip to Redis, for /health."""
        await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()
