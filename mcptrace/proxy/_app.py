"""The HTTP side of the proxy: serve's layers in front of a forwarding endpoint.

    client ─▶ SuspendedShortcut (a token found suspended: its 429 here, no other layer runs)
           ─▶ RequestIdMiddleware ─▶ HostCheck ─▶ Auth ─▶ Sessions ─▶ Admission ─▶ NegotiationMiddleware ─▶ routes
                (id, rejections)     (Host,      (token,   (owner,     (limits,      (Accept per request)
                                      Origin)     or 401)   or 404)     quotas,                 /mcp ─▶ endpoint
                                                                        budget, body)   /health /livez /metrics

The layers are `mcptrace serve`'s own (`guards._setup.wrap_http`): the same
request ids, rejection and refusal lines, the same bearer-token and JWT checks
and rate limits before the body is read, sessions bound to the principal that
opened them, the same answers for JSON-only and SSE-only clients. `/health`
reports the target as a critical check. The endpoint (`_http.HttpForwarder` or
`_bridge.Bridge`) does the relaying.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mcptrace import _fields as f
from mcptrace.guards._auth import RESOURCE_METADATA_PATH, resource_metadata
from mcptrace.guards._backend import RedisBackend
from mcptrace.guards._setup import shortcut_http, wrap_http
from mcptrace.middleware._hostcheck import HostCheckMiddleware, host_rules
from mcptrace.middleware._negotiate import NegotiationMiddleware
from mcptrace.middleware._requests import RequestIdMiddleware
from mcptrace.proxy._service import ProxyService
from mcptrace.server._health import HealthChecker


class Endpoint(Protocol):
    """What the front needs of a forwarding endpoint."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def check(self) -> dict[str, Any]:
        """The target's health check (`{"status": ...}`); may raise."""
        ...


def build_front(service: ProxyService, endpoint: Endpoint, *, target: str) -> ASGIApp:
    config = service.config
    checker = HealthChecker(
        db=None, sink=service.logger.sink, breakers=service.guards.breakers, upstream_url=None, http=lambda: None,
        timeout=min(config.upstream_timeout, 2.0), cache_seconds=config.health_cache_seconds,
    )
    checker.extra["target"] = (endpoint.check, True)
    if isinstance(service.guards.backend, RedisBackend):
        checker.extra["redis"] = (service.guards.redis_check, False)

    async def health(request: Request) -> JSONResponse:
        body, status = await checker.report()
        body["target"] = target
        body["telemetry"] = service.telemetry.health()
        return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})

    async def livez(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    routes = [
        Route("/mcp", endpoint=endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/health", endpoint=health, methods=["GET"]),
        Route("/livez", endpoint=livez, methods=["GET"]),
    ]
    prometheus = service.telemetry.prometheus
    if config.metrics and prometheus is not None:
        routes.append(Route("/metrics", endpoint=_get(prometheus.endpoint), methods=["GET"]))
    if service.guards.authenticator is not None:
        issuer = [config.jwt_issuer] if config.jwks and config.jwt_issuer else []
        metadata = resource_metadata(authorization_servers=issuer)

        async def protected_resource(request: Request) -> JSONResponse:
            return JSONResponse(metadata(request.scope))

        routes.append(Route(RESOURCE_METADATA_PATH, endpoint=protected_resource, methods=["GET"]))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await endpoint.start()
        try:
            async with service.guards.running():  # the revocation feed, while the proxy serves
                yield
        finally:
            await endpoint.aclose()
            await service.aclose()
            service.logger.emit(f.EV_SERVER_STOPPED, **{
                f.MESSAGE: "shutdown complete", f.TRANSPORT: "http", f.TARGET: target})
            service.logger.sink.flush()

    app: ASGIApp = _McpFirst(endpoint, Starlette(routes=routes, lifespan=lifespan))
    app = wrap_http(NegotiationMiddleware(app), service.guards, config, service.logger)
    app = HostCheckMiddleware(app, rules=host_rules(config.host))
    return shortcut_http(RequestIdMiddleware(app, logger=service.logger), service.guards)


class _McpFirst:
    """`/mcp` straight to its endpoint (every call takes this path); Starlette's router for the rest."""

    def __init__(self, mcp: ASGIApp, rest: ASGIApp) -> None:
        self.mcp = mcp
        self.rest = rest

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp" and scope["method"] in ("POST", "GET", "DELETE"):
            await self.mcp(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def _get(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(request)

    return endpoint
