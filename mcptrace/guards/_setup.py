"""Building the guards of one server from its `Config`, and the topology policy for auth."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp

from mcptrace import _fields as f
from mcptrace._config import Config
from mcptrace._errors import ConfigError
from mcptrace.guards._admission import AdmissionMiddleware
from mcptrace.guards._auth import Authenticator, AuthMiddleware
from mcptrace.guards._backend import LimitBackend, MemoryBackend, RedisBackend
from mcptrace.guards._breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, Breakers
from mcptrace.guards._jwt import JwtVerifier
from mcptrace.guards._limits import SCOPE_SUSPENDED, LimitPolicy
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.guards._stats import GuardStats
from mcptrace.guards._tokens import TokenStore
from mcptrace.server._bind import is_loopback
from mcptrace.telemetry._log import EventLogger


@dataclass
class Guards:
    stats: GuardStats
    limiter: RateLimiter
    breakers: Breakers
    backend: LimitBackend
    authenticator: Authenticator | None = None

    async def aclose(self) -> None:
        await self.backend.aclose()


def build_guards(
    config: Config, logger: EventLogger, *, clock: Callable[[], float] = time.monotonic
) -> Guards:
    stats = GuardStats()
    policy = LimitPolicy.from_config(config)
    backend: LimitBackend = RedisBackend(config.redis_url) if config.redis_url else MemoryBackend(clock=clock)

    def on_transition(service: str, old: str, new: str) -> None:
        stats.breaker_transitions[(service, new)] += 1
        logger.emit(
            f.EV_BREAKER_STATE,
            "info" if new == "closed" else "warning",
            **{f.SERVICE: service, f.BREAKER_STATE: new, f.MESSAGE: f"{service} breaker {old} -> {new}"},
        )

    def on_reject(service: str) -> None:
        stats.breaker_rejections[service] += 1

    breakers = Breakers(
        BreakerPolicy(
            failure_rate=config.breaker_failure_rate,
            min_calls=config.breaker_min_calls,
            window=config.breaker_window,
            cooldown=config.breaker_cooldown,
        ),
        clock=clock,
        on_transition=on_transition,
        on_reject=on_reject,
    )
    authenticator = None
    if config.auth_enabled:
        store = None
        if config.tokens_file is not None:
            if not config.tokens_file.exists():
                raise ConfigError(
                    f"token store {config.tokens_file} does not exist; create it with "
                    "`mcptrace token add CALLER --tenant T --store FILE`"
                )
            store = TokenStore(config.tokens_file, reload_interval=config.token_reload_interval)
        verifier = None
        if config.jwks is not None:
            verifier = JwtVerifier(
                config.jwks,
                issuer=config.jwt_issuer,
                audience=config.jwt_audience,
                caller_claim=config.jwt_caller_claim,
                tenant_claim=config.jwt_tenant_claim,
            )
        authenticator = Authenticator(
            store=store, jwt=verifier, revocations=backend if config.redis_url else None
        )
    limiter = RateLimiter(policy, backend=backend, stats=stats, logger=logger)
    return Guards(
        stats=stats, limiter=limiter, breakers=breakers, backend=backend, authenticator=authenticator
    )


def wrap_http(app: ASGIApp, guards: Guards, logger: EventLogger) -> ASGIApp:
    """Auth (outer) then admission, in front of `app`; nothing when auth is off."""
    if guards.authenticator is None:
        return app
    app = AdmissionMiddleware(app, limiter=guards.limiter, logger=logger)
    return AuthMiddleware(app, authenticator=guards.authenticator, logger=logger, stats=guards.stats)


def auth_policy(config: Config) -> str | None:
    """The topology rule for HTTP: a warning to log, or `ConfigError` when it must not start.

    Loopback without auth starts with a warning (other local processes can reach
    it); any other address without auth refuses, override or not.
    """
    if config.auth_enabled:
        return None
    if not is_loopback(config.host):
        raise ConfigError(
            f"refusing to serve {config.host} without authentication: pass --tokens FILE or --jwks "
            "(with --issuer and --audience); --allow-non-loopback does not waive this"
        )
    return (
        f"no authentication on {config.host}: any local process can call the tools; "
        "pass --tokens FILE to require bearer tokens"
    )


class GuardMetricsView:
    """The guards' counters in the shape `register_guard_metrics` reads (at collection time only)."""

    _STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

    def __init__(self, guards: Guards) -> None:
        self._guards = guards

    @property
    def auth_failures(self) -> int:
        return sum(self._guards.stats.auth_failures.values())

    @property
    def rate_limited(self) -> int:
        return sum(self._guards.stats.rate_limited.values())

    @property
    def breaker_states(self) -> dict[str, int]:
        return {name: self._STATE_CODES.get(state, 0) for name, state in self._guards.breakers.states().items()}

    def refusals(self) -> dict[str, int]:
        """Requests the guards refused so far, by the log contract's `refusal_reason`."""
        stats = self._guards.stats
        limited = stats.rate_limited
        return {
            f.R_UNAUTHENTICATED: sum(stats.auth_failures.values()),
            f.R_FORBIDDEN: stats.forbidden,
            f.R_RATE_LIMITED: sum(n for scope, n in limited.items() if scope != SCOPE_SUSPENDED),
            f.R_SUSPENDED: limited.get(SCOPE_SUSPENDED, 0),
        }

    def suspensions(self) -> int:
        return self._guards.stats.suspensions

    def breaker_transitions(self) -> dict[tuple[str, str], int]:
        return dict(self._guards.stats.breaker_transitions)
