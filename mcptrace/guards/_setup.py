"""Building the guards of one server from its `Config`, and the topology policy for auth."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.types import ASGIApp

from mcptrace import _fields as f
from mcptrace._config import Config
from mcptrace._errors import ConfigError
from mcptrace.guards._admission import AdmissionMiddleware
from mcptrace.guards._auth import Authenticator, AuthMiddleware
from mcptrace.guards._backend import LimitBackend, MemoryBackend, RedisBackend
from mcptrace.guards._breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, Breakers
from mcptrace.guards._jwt import JwtVerifier
from mcptrace.guards._limits import LimitPolicy
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.guards._refusals import Refusals
from mcptrace.guards._revocations import RevocationFeed, RevokedKeys, replica_name
from mcptrace.guards._sessions import SessionMiddleware, SessionTable
from mcptrace.guards._shortcut import SuspendedShortcut, SuspendedTokens
from mcptrace.guards._stats import GuardStats
from mcptrace.guards._tokens import TokenStore
from mcptrace.middleware._body import BodyBudget
from mcptrace.server._bind import is_loopback
from mcptrace.telemetry._log import EventLogger

#: The breaker of the shared guard state (its transitions are logged and counted like any other).
REDIS_SERVICE = "redis"
#: A replica id starts every session id of its replica and a proxy's routing rule: plain characters only.
_REPLICA_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass
class Guards:
    stats: GuardStats
    limiter: RateLimiter
    breakers: Breakers
    backend: LimitBackend
    refusals: Refusals
    authenticator: Authenticator | None = None
    #: This replica's copy of the revocations shared through Redis, kept by `feed`.
    feed: RevocationFeed | None = None
    #: Tokens found suspended, refused by the outermost layer (`shortcut_http`) while the suspension lasts.
    suspended: SuspendedTokens = field(default_factory=lambda: SuspendedTokens(enabled=False))
    _background: anyio.CancelScope | None = field(default=None, init=False, repr=False)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The guards' work while a server serves (its lifespan, in `serve` and `proxy` alike): with Redis,
        the connection warmed up first (the first requests find it and the script ready; 1 s at most) and
        the revocation feed kept in step until the server stops (`aclose`, or the end of the block)."""
        if isinstance(self.backend, RedisBackend):
            await self.backend.warm_up()
        feed = self.feed
        if feed is None:
            yield
            return
        background = self._background = anyio.CancelScope()

        async def run_feed() -> None:
            with background:
                await feed.run()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_feed)
            try:
                yield
            finally:
                background.cancel()

    async def redis_check(self) -> dict[str, Any]:
        """`/health`'s `redis` check. Not critical: without Redis, limits hold per replica and known
        revocations keep applying."""
        backend = self.backend
        if not isinstance(backend, RedisBackend):
            return {"status": "healthy"}
        try:
            await backend.ping()
        except Exception as exc:
            return {"status": "degraded",
                    "error": f"{exc}; rate limits per replica, revocations as last synchronised"[:300]}
        feed = self.feed
        if feed is not None and not feed.up:
            return {"status": "degraded", "error": f"revocation feed down: {feed.last_error}"[:300]}
        return {"status": "healthy", "revoked_keys": len(feed.keys) if feed is not None else 0}

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()  # the feed stops before its connections close
        await self.backend.aclose()
        if self.feed is not None:
            await self.feed.aclose()
        self.refusals.close()


def build_guards(
    config: Config, logger: EventLogger, *, clock: Callable[[], float] = time.monotonic, transport: str = "http",
) -> Guards:
    stats = GuardStats()
    policy = LimitPolicy.from_config(config)
    if config.replica_id is not None and not _REPLICA_ID.fullmatch(config.replica_id):
        raise ConfigError(f"replica id {config.replica_id!r}: use 1-32 letters, digits, '-' or '_'")

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
    backend: LimitBackend = MemoryBackend(clock=clock)
    revoked: RevokedKeys | None = None
    feed = None
    if config.redis_url:
        backend = RedisBackend(config.redis_url, timeout=config.redis_timeout, breaker=breakers.get(REDIS_SERVICE))
        revoked = RevokedKeys()
        feed = RevocationFeed(config.redis_url, revoked, replica=replica_name(config.replica_id), logger=logger,
                              timeout=config.redis_timeout)
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
        authenticator = Authenticator(store=store, jwt=verifier, revoked=revoked)
    limiter = RateLimiter(policy, backend=backend, stats=stats, clock=clock)
    refusals = Refusals(logger, stats=stats, transport=transport)
    return Guards(
        stats=stats, limiter=limiter, breakers=breakers, backend=backend, refusals=refusals,
        authenticator=authenticator, feed=feed, suspended=SuspendedTokens(enabled=authenticator is not None),
    )


def wrap_http(app: ASGIApp, guards: Guards, config: Config, logger: EventLogger) -> ASGIApp:
    """The guards in front of `app`, outermost first: who (auth), whose session, may it run (admission)."""
    sessions = None
    if not config.stateless:
        sessions = SessionTable(idle_seconds=config.session_idle_seconds, per_principal=config.sessions_per_caller)
    app = AdmissionMiddleware(
        app, limiter=guards.limiter, refusals=guards.refusals, logger=logger, sessions=sessions,
        suspended=guards.suspended,
        budget=BodyBudget(config.body_budget_bytes, config.body_budget_for_caller),
        max_body_bytes=config.max_body_bytes, body_timeout=config.body_timeout,
    )
    if sessions is not None:
        app = SessionMiddleware(app, table=sessions, refusals=guards.refusals, replica_id=config.replica_id)
    return AuthMiddleware(app, authenticator=guards.authenticator, refusals=guards.refusals, stats=guards.stats)


def shortcut_http(app: ASGIApp, guards: Guards) -> ASGIApp:
    """The outermost layer: a suspended token's requests refused before any other layer runs."""
    return SuspendedShortcut(app, tokens=guards.suspended, limiter=guards.limiter, refusals=guards.refusals)


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
        return dict(self._guards.stats.refused)

    def suspensions(self) -> int:
        return self._guards.stats.suspensions

    def breaker_transitions(self) -> dict[tuple[str, str], int]:
        return dict(self._guards.stats.breaker_transitions)
