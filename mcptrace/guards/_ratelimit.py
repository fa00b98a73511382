"""The rate limiter: policy + backend + counters.

A request is checked in up to two steps: from its headers, the caller's bucket
(and the tool's, when the headers name it: `Mcp-Name` on the 2026-07-28 wire);
from its body, the tool's bucket when only the body names the tool. Suspensions
are checked at every step, so a suspended caller is refused before its body.

When the shared backend (Redis) cannot answer within its deadline, the decision
falls back to this process's own buckets: limits still hold, per replica (a
caller spread over N replicas may get up to N times its limit while Redis is
out), and `GuardStats.backend_errors` counts each fallback. A suspension the
backend reported is remembered here until it ends, so the refusals of a
suspended caller cost no round trip at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from mcptrace.guards._backend import BackendUnavailable, LimitBackend, MemoryBackend
from mcptrace.guards._limits import ALLOWED, SCOPE_SUSPENDED, Decision, LimitPolicy
from mcptrace.guards._stats import GuardStats

#: Suspensions remembered locally at most (they are few; the oldest are forgotten first).
_MAX_SUSPENSIONS = 10_000


class RateLimiter:
    def __init__(
        self,
        policy: LimitPolicy,
        *,
        backend: LimitBackend | None = None,
        stats: GuardStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.backend: LimitBackend = backend if backend is not None else MemoryBackend(clock=clock)
        self.stats = stats if stats is not None else GuardStats()
        self._clock = clock
        #: This process's own buckets, used while the shared backend cannot answer.
        local = isinstance(self.backend, MemoryBackend)
        self.fallback = self.backend if local else MemoryBackend(clock=clock)
        #: Suspensions the shared backend reported (a local backend knows its own at no cost).
        self._suspended_until: dict[str, float] = {}
        self._remember = not local

    async def check(self, caller: str, tool: str | None = None, *, include_caller: bool = True) -> Decision:
        """Admit or refuse one request of `caller`: its caller bucket (unless `include_caller` is false)
        and, when `tool` is given, its (caller, tool) bucket."""
        until = self._suspended_until.get(caller)
        if until is not None:
            left = until - self._clock()
            if left > 0:
                return self._refused(Decision(False, SCOPE_SUSPENDED, math.ceil(left * 1000)))
            del self._suspended_until[caller]
        if not include_caller and tool is None:
            return ALLOWED
        try:
            decision = await self.backend.decide(caller, tool, self.policy, include_caller=include_caller)
        except BackendUnavailable:
            self.stats.backend_errors += 1
            decision = await self.fallback.decide(caller, tool, self.policy, include_caller=include_caller)
        except Exception:  # a backend that is not ours to judge: never a failed request because of it
            self.stats.backend_errors += 1
            return ALLOWED
        if decision.allowed:
            self.stats.admitted += 1
            return decision
        if decision.scope == SCOPE_SUSPENDED and self._remember:
            if len(self._suspended_until) >= _MAX_SUSPENSIONS:
                self._suspended_until.pop(next(iter(self._suspended_until)))
            self._suspended_until[caller] = self._clock() + decision.retry_after_ms / 1000
        if decision.suspended_now:
            self.stats.suspensions += 1
        return self._refused(decision)

    def suspended_for(self, caller: str) -> int | None:
        """Milliseconds left of `caller`'s suspension as this process knows it (no round trip), counted as
        one refusal; None when no suspension is known (then `check` decides)."""
        until, clock = self._suspended_until.get(caller), self._clock
        if until is None and isinstance(self.backend, MemoryBackend):
            until, clock = self.backend.suspended_until(caller), self.backend.clock
        if until is None:
            return None
        left = until - clock()
        if left <= 0:
            return None
        self.stats.rate_limited[SCOPE_SUSPENDED] += 1
        return math.ceil(left * 1000)

    def _refused(self, decision: Decision) -> Decision:
        self.stats.rate_limited[decision.scope or "unknown"] += 1
        return decision
