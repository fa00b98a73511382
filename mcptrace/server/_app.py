"""Assembling `mcptrace serve`: the SDK server, our tools, and the layers around them.

    client ─▶ RequestIdMiddleware ─▶ NegotiationMiddleware ─▶ SDK Streamable HTTP
                (id, size limit,       (Accept per request)      └─ SDK middleware chain:
                 rejections)                                         OpenTelemetry ─▶ RequestLog ─▶ tool
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from mcp.server import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from mcptrace import _fields as f
from mcptrace._config import Config
from mcptrace._version import __version__
from mcptrace.middleware._negotiate import NegotiationMiddleware
from mcptrace.middleware._requestlog import RequestLogMiddleware, default_identify
from mcptrace.middleware._requests import RequestIdMiddleware
from mcptrace.server._db import Database
from mcptrace.server._remote import LoadReport, load_pinned_resources
from mcptrace.server._tools import DEFAULT_TENANT, Dependencies, register_tools
from mcptrace.telemetry import _context
from mcptrace.telemetry._log import EventLogger, LogSink

SERVER_NAME = "mcptrace"


def make_logger(config: Config) -> EventLogger:
    sink = LogSink(
        config.resolved_log_file, stderr=config.log_stderr, max_bytes=config.log_max_bytes,
        backup_count=config.log_backups,
    )
    return EventLogger(sink, level=config.log_level)


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
    started: float = field(default_factory=time.monotonic)
    pinned: LoadReport | None = None

    async def aclose(self) -> None:
        if self.deps.http is not None:
            await self.deps.http.aclose()


def build_service(config: Config, *, logger: EventLogger | None = None, transport: str = "http") -> Service:
    logger = logger or make_logger(config)
    deps = Dependencies(config=config, db=Database(config.resolved_db_path))
    mcp: MCPServer[Any] = MCPServer(SERVER_NAME, version=__version__, log_level="WARNING")
    register_tools(mcp, deps)
    pinned = None
    if config.resources_manifest is not None:
        pinned = load_pinned_resources(
            mcp, manifest=config.resources_manifest, cache_dir=config.resources_cache_dir, logger=logger,
        )
    mcp.middleware.append(RequestLogMiddleware(logger, identify=_identify, transport=transport))
    hook = log_downstream_calls(logger)
    if hook not in _context.downstream_hooks:
        _context.downstream_hooks.append(hook)
    return Service(config=config, logger=logger, mcp=mcp, deps=deps, pinned=pinned)


def build_app(service: Service) -> ASGIApp:
    """The ASGI app of `mcptrace serve` for an already-built service."""
    config = service.config

    @service.mcp.custom_route("/livez", methods=["GET"])
    async def livez(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @service.mcp.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            service.deps.db.check()
            checks["sqlite"] = {"status": "healthy", "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
        except Exception as exc:
            checks["sqlite"] = {"status": "unhealthy", "error": str(exc)}
        checks["log_sink"] = (
            {"status": "healthy"} if service.logger.sink.writable()
            else {"status": "degraded", "error": service.logger.sink.stats.last_error}
        )
        if service.pinned is not None:
            stale = service.pinned.from_cache
            checks["pinned_resources"] = (
                {"status": "degraded", "error": f"served from the verified cache: {', '.join(stale)}"}
                if stale else {"status": "healthy", "count": len(service.pinned.loaded)}
            )
        statuses = {c["status"] for c in checks.values()}
        overall = "unhealthy" if "unhealthy" in statuses else "degraded" if "degraded" in statuses else "healthy"
        return JSONResponse(
            {"status": overall, "checks": checks, "version": __version__,
             "uptime_seconds": round(time.monotonic() - service.started, 1)},
            status_code=503 if overall == "unhealthy" else 200,
        )

    inner = service.mcp.streamable_http_app(
        stateless_http=config.stateless, max_request_body_size=config.max_body_bytes, host=config.host,
    )
    app: ASGIApp = NegotiationMiddleware(inner)
    app = RequestIdMiddleware(app, logger=service.logger, max_body_bytes=config.max_body_bytes)
    return _with_lifespan(app, service)


def _with_lifespan(app: ASGIApp, service: Service) -> ASGIApp:
    """Open the service's HTTP client at start-up and close it at shutdown, around the app's own lifespan."""

    @asynccontextmanager
    async def resources() -> AsyncIterator[None]:
        service.deps.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
        try:
            yield
        finally:
            await service.aclose()

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        async with resources():
            await app(scope, receive, send)

    return wrapped
