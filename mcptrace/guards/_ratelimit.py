"""The rate limiter: policy + backend + counters, and the log line of every refusal.

Backends that cannot answer (Redis down) fail open: the request proceeds and
`GuardStats.backend_errors` counts it, because a limiter outage must not become
a service outage.
"""

from __future__ import annotations

from mcptrace import _fields as f
from mcptrace.guards._backend import LimitBackend, MemoryBackend
from mcptrace.guards._limits import ALLOWED, Decision, LimitPolicy
from mcptrace.guards._stats import GuardStats
from mcptrace.telemetry._log import EventLogger, null_logger


class RateLimiter:
    def __init__(
        self,
        policy: LimitPolicy,
        *,
        backend: LimitBackend | None = None,
        stats: GuardStats | None = None,
        logger: EventLogger | None = None,
    ) -> None:
        self.policy = policy
        self.backend: LimitBackend = backend if backend is not None else MemoryBackend()
        self.stats = stats if stats is not None else GuardStats()
        self.logger = logger or null_logger()

    async def check(self, caller: str, tool: str | None = None, *, request_id: str | None = None) -> Decision:
        """Admit or refuse one request of `caller` (a `tools/call` of `tool` when given); logs refusals."""
        try:
            decision = await self.backend.decide(caller, tool, self.policy)
        except Exception:
            self.stats.backend_errors += 1
            return ALLOWED
        if decision.allowed:
            self.stats.admitted += 1
            return decision
        self.stats.rate_limited[decision.scope or "unknown"] += 1
        if decision.suspended_now:
            self.stats.suspensions += 1
        fields = {
            f.CALLER_ID: caller,
            f.LIMIT_SCOPE: decision.scope,
            f.RETRY_AFTER_MS: decision.retry_after_ms,
            f.STATUS: f.FAILURE,
            f.MESSAGE: "caller suspended" if decision.suspended_now else "rate limit exceeded",
        }
        if tool is not None:
            fields[f.TOOL_NAME] = tool
        if request_id is not None:
            fields[f.REQUEST_ID] = request_id
        self.logger.emit(f.EV_RATE_LIMITED, "warning", **fields)
        return decision
