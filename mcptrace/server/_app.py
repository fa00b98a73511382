"""Assembling `mcptrace serve`: the SDK server, our tools, and the layers around them.

    client ─▶ SuspendedShortcut (a token found suspended: its 429 here, no other layer runs)
           ─▶ RequestIdMiddleware ─▶ HostCheck ─▶ Auth ─▶ Sessions ─▶ Admission ─────────────────────▶
                (id, rejections)     (Host,      (token,   (owner,     (limits, quotas, budget; then the
                                      Origin)     or 401)   or 404)     body; then tools and tool limits)
              ─▶ EnvelopeMiddleware ─▶ NegotiationMiddleware ─▶ SessionLimitMiddleware ─▶ SDK
                 (one JSON-RPC          (Accept per request)      (a clear 503 with Retry-After
                  message or 400)                                   at the session cap)
    SDK middleware chain: RateLimit (stdio) ─▶ RequestLog (record, line, span, metrics) ─▶ tool

Everything up to Admission works from the request's headers: a request refused
there never has its body read.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from mcp.server import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from mcptrace import _fields as f
from mcptrace._config import Config
from mcptrace._errors import ConfigError
from mcptrace._version import __version__
from mcptrace.guards._auth import RESOURCE_METADATA_PATH, resource_metadata
from mcptrace.guards._backend import RedisBackend
from mcptrace.guards._sdk import RateLimitMiddleware, ToolFilterMiddleware
from mcptrace.guards._setup import GuardMetricsView, Guards, build_guards, shortcut_http, wrap_http
from mcptrace.middleware._clientmeta import TraceMetaGuard
from mcptrace.middleware._envelope import EnvelopeMiddleware
from mcptrace.middleware._hostcheck import HostCheckMiddleware, host_rules, transport_security
from mcptrace.middleware._negotiate import NegotiationMiddleware
from mcptrace.middleware._requestlog import RequestLogMiddleware, default_identify
from mcptrace.middleware._requests import RequestIdMiddleware
from mcptrace.middleware._sessionlimit import SessionLimitMiddleware
from mcptrace.server._arguments import ArgumentCheckingServer
from mcptrace.server._db import Database
from mcptrace.server._health import HealthChecker
from mcptrace.server._remote import LoadedPins, load_pinned_resources
from mcptrace.server._tools import DEFAULT_TENANT, Dependencies, register_tools
from mcptrace.telemetry import _context
from mcptrace.telemetry._log import EventLogger, LogSink
from mcptrace.telemetry._metrics import register_guard_metrics
from mcptrace.telemetry._repeats import RepeatWatch
from mcptrace.telemetry._setup import ServerTelemetry, setup_telemetry
from mcptrace.telemetry._ship import LogShipper

SERVER_NAME = "mcptrace"


def make_logger(config: Config) -> EventLogger:
    """The log of `mcptrace serve` and `mcptrace proxy`; with `config.ship`, each rotated file is shipped."""
    sink = LogSink(
        config.resolved_log_file, stderr=config.log_stderr, max_bytes=config.log_max_bytes,
        backup_count=config.log_backups,
    )
    logger = EventLogger(sink, level=config.log_level)
    if config.ship:
        shipper = LogShipper(
            logger, config.resolved_log_file, config.ship, replica=config.replica_id,
            retry=config.ship_retry, retry_max=config.ship_retry_max,
        )
        sink.on_rotate(shipper.add)
        sink.on_close(shipper.close)
        sink.shipping = shipper.health
        shipper.start()
    return logger


def log_downstream_calls(logger: EventLogger) -> _context.DownstreamHook:
    """A hook that writes one `downstream_call` line per dependency call."""

    def hook(service: str, query_hash: str | None, duration_ms: float, error: str | None) -> None:
        logger.emit(
            f.EV_DOWNSTREAM_CALL, "info" if error is None else "warning", **{
                f.SERVICE: service, f.QUERY_HASH: query_hash, f.DURATION_MS: duration_ms,
                f.STATUS: f.FAILURE if error else f.SUCCESS, f.ERROR: error,
            },
        )

    return hook


def _identify(ctx: Any) -> tuple[str | None, str | None]:
    caller, tenant = default_identify(ctx)
    return caller, tenant or DEFAULT_TENANT


@dataclass
class Service:
    """Everything one running `mcptrace serve` holds; closed by `aclose()`."""

    config: Config
    logger: EventLogger
    mcp: MCPServer[Any]
    deps: Dependencies
    guards: Guards
    telemetry: ServerTelemetry | None = None
    started: float = field(default_factory=time.monotonic)
    health: HealthChecker | None = None
    pinned: LoadedPins | None = None

    async def aclose(self) -> None:
        if self.deps.http is not None:
            await self.deps.http.aclose()
        await self.guards.aclose()
        if self.telemetry is not None:
            await anyio.to_thread.run_sync(self.telemetry.shutdown)


def build_service(config: Config, *, logger: EventLogger | None = None, transport: str = "http") -> Service:
    logger = logger or make_logger(config)
    guards = build_guards(config, logger, transport=transport)
    deps = Dependencies(config=config, db=Database(config.resolved_db_path), breakers=guards.breakers)
    mcp: MCPServer[Any] = ArgumentCheckingServer(SERVER_NAME, version=__version__, log_level="WARNING")
    register_tools(mcp, deps)
    mcp.middleware.insert(0, TraceMetaGuard())
    mcp.middleware.insert(0, RateLimitMiddleware(guards.limiter, guards.refusals))
    pinned = None
    if config.resources_manifest is not None:
        pinned = load_pinned_resources(
            mcp, manifest=config.resources_manifest, cache_dir=config.resources_cache_dir, logger=logger,
        )
    mcp.middleware.append(RequestLogMiddleware(logger, identify=_identify, transport=transport))
    mcp.middleware.append(ToolFilterMiddleware())
    hook = log_downstream_calls(logger)
    if hook not in _context.downstream_hooks:
        _context.downstream_hooks.append(hook)
    telemetry = setup_telemetry(mcp, logger, transport=transport, span_export=config.span_export)
    service = Service(config=config, logger=logger, mcp=mcp, deps=deps, guards=guards, telemetry=telemetry,
                      pinned=pinned)
    metrics = telemetry.instrumentation.metrics
    for dependency in ("sqlite", "upstream"):  # the bundled tools' dependencies: error counters from 0
        metrics.dependency(dependency)
    view = GuardMetricsView(guards)
    register_guard_metrics(metrics.meter, view)
    metrics.observe_refusals(view.refusals)
    metrics.observe_suspensions(view.suspensions)
    metrics.observe_breaker_transitions(view.breaker_transitions)
    try:
        metrics.loops = RepeatWatch(threshold=config.loop_threshold, window=config.loop_window)
    except ValueError as exc:
        raise ConfigError(f"MCPTRACE_LOOP_THRESHOLD / MCPTRACE_LOOP_WINDOW: {exc}") from None
    return service


def route(service: Service, path: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
    """A GET route beside `/mcp` (the SDK's `custom_route`, without its untyped decorator)."""
    service.mcp.custom_route(path, methods=["GET"])(endpoint)


def build_app(service: Service) -> ASGIApp:
    """The ASGI app of `mcptrace serve` for an already-built service."""
    config = service.config

    async def livez(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    route(service, "/livez", livez)

    checker = HealthChecker(
        db=service.deps.db, sink=service.logger.sink, breakers=service.guards.breakers,
        upstream_url=config.upstream_url, http=lambda: service.deps.http,
        timeout=min(config.upstream_timeout, 1.0), cache_seconds=config.health_cache_seconds,
        started=service.started,
    )
    service.health = checker
    if isinstance(service.guards.backend, RedisBackend):
        checker.extra["redis"] = (service.guards.redis_check, False)

    async def health(request: Request) -> JSONResponse:
        body, status = await checker.report()
        if service.telemetry is not None:
            body["telemetry"] = service.telemetry.health()
        if service.pinned is not None:
            body = _with_pinned_check(body, service.pinned)
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    route(service, "/health", health)

    if service.guards.authenticator is not None:
        issuer = [config.jwt_issuer] if config.jwks and config.jwt_issuer else []
        metadata = resource_metadata(authorization_servers=issuer)

        async def protected_resource(request: Request) -> JSONResponse:
            return JSONResponse(metadata(request.scope))

        route(service, RESOURCE_METADATA_PATH, protected_resource)

    if config.metrics and service.telemetry is not None:
        route(service, "/metrics", service.telemetry.prometheus.endpoint)

    inner: ASGIApp = service.mcp.streamable_http_app(
        stateless_http=config.stateless, max_request_body_size=config.max_body_bytes,
        transport_security=transport_security(),
        session_idle_timeout=config.session_idle_seconds, max_sessions=config.max_sessions,
    )
    if not config.stateless:
        capped = SessionLimitMiddleware(inner, max_sessions=config.max_sessions, refusals=service.guards.refusals)
        if service.telemetry is not None:
            service.telemetry.instrumentation.metrics.observe_session_rejections(lambda: capped.refused)
            service.telemetry.instrumentation.metrics.observe_max_sessions(config.max_sessions)
        inner = capped
    app: ASGIApp = wrap_http(EnvelopeMiddleware(NegotiationMiddleware(inner)), service.guards, config, service.logger)
    app = HostCheckMiddleware(app, rules=host_rules(config.host))
    app = shortcut_http(RequestIdMiddleware(app, logger=service.logger), service.guards)
    return _with_lifespan(app, service)


def _with_pinned_check(body: dict[str, Any], pinned: LoadedPins) -> dict[str, Any]:
    """Resources served from the verified cache (the origin changed or failed) make the service degraded."""
    stale = pinned.from_cache
    check = (
        {"status": "degraded", "error": f"served from the verified cache: {', '.join(stale)}"}
        if stale else {"status": "healthy", "count": len(pinned.loaded)}
    )
    body = {**body, "checks": {**body.get("checks", {}), "pinned_resources": check}}
    if stale and body.get("status") == "healthy":
        body["status"] = "degraded"
    return body


def _with_lifespan(app: ASGIApp, service: Service) -> ASGIApp:
    """Open the service's HTTP client at start-up; close everything and flush the log at shutdown.

    The clean-up runs before `lifespan.shutdown.complete` is passed on: uvicorn re-raises
    SIGTERM/SIGINT as soon as it sees that message, which ends the process at once.
    """

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        closed = False

        async def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            await service.aclose()
            service.logger.emit(f.EV_SERVER_STOPPED, **{f.MESSAGE: "shutdown complete", f.TRANSPORT: "http"})
            service.logger.sink.flush()

        async def send_after_close(message: Any) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await close()
            await send(message)

        service.deps.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
        try:
            async with service.guards.running():  # the revocation feed, while the server serves
                await app(scope, receive, send_after_close)
        finally:
            await close()

    return wrapped
