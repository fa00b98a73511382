"""Production guards: who may call (auth, tenants), how often (rate limits, suspensions), and
what happens when a dependency struggles (circuit breakers).

    request ─▶ AuthMiddleware ─▶ AdmissionMiddleware ─▶ … SDK ─▶ RateLimitMiddleware ─▶ tool ─▶ Breakers
               (token or JWT       (allowed tools,              (callers without auth)   (per dependency)
                → Identity)         buckets, suspension)
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
