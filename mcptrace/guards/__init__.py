"""Production guards: who may call (auth, tenants), on whose session, how often (rate limits,
suspensions, quotas), and what happens when a dependency struggles (circuit breakers).

    request ─▶ AuthMiddleware ─▶ SessionMiddleware ─▶ AdmissionMiddleware ─▶ … SDK ─▶ tool ─▶ Breakers
               (token or JWT     (the session's       (limits, session quota,                 (per
                → Identity)       owner, or 404)       body budget; then tools)               dependency)

Everything up to the admission layer's body stage works from the request's
headers. Every refusal is one `request_refused` line (`_refusals`). Over stdio
`RateLimitMiddleware` (SDK middleware) limits the declared client instead.
"""

from mcptrace.guards._backend import LimitBackend, MemoryBackend, RedisBackend
from mcptrace.guards._breaker import BreakerOpenError, BreakerPolicy, Breakers, CircuitBreaker
from mcptrace.guards._identity import Identity
from mcptrace.guards._jwt import JwtVerifier
from mcptrace.guards._limits import Decision, Limit, LimitPolicy
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.guards._stats import GuardStats
from mcptrace.guards._tokens import TokenStore

__all__ = [
    "BreakerOpenError",
    "BreakerPolicy",
    "Breakers",
    "CircuitBreaker",
    "Decision",
    "GuardStats",
    "Identity",
    "JwtVerifier",
    "Limit",
    "LimitBackend",
    "LimitPolicy",
    "MemoryBackend",
    "RateLimiter",
    "RedisBackend",
    "TokenStore",
]
