"""The bundled tools: each one touches a real dependency so logs and /health have something true to say."""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from mcptrace._config import Config
from mcptrace._errors import DownstreamError
from mcptrace.guards._breaker import Breakers
from mcptrace.server._db import Database
from mcptrace.telemetry._context import DownstreamCall, current_call, downstream

DEFAULT_TENANT = "acme"

_PUBLIC_CONFIG = {
    "service": "mcptrace",
    "region": "local",
    "features": {"reports": True, "upstream": True},
    "limits": {"search_max_rows": 50},
}


@dataclass
class Dependencies:
    """What the tools reach: built once at start-up, shared by every request."""

    config: Config
    db: Database
    http: httpx.AsyncClient | None = None
    breakers: Breakers | None = None

    def guard(self, service: str, call: DownstreamCall) -> AbstractContextManager[Any]:
        """The breaker of `service` around one call (nothing when breakers are off)."""
        return self.breakers.guard(service, call) if self.breakers is not None else nullcontext()


def _tenant() -> str:
    call = current_call()
    return (call.tenant if call and call.tenant else None) or DEFAULT_TENANT


async def _query_db(deps: Dependencies, op: str, fn: Any, *args: Any) -> Any:
    async with downstream("sqlite", f"{op}:{args!r}") as call:
        try:
            with deps.guard("sqlite", call):
                return await anyio.to_thread.run_sync(fn, *args)
        except sqlite3.Error as exc:
            raise ToolError(f"database unavailable: {exc}") from None
        except DownstreamError as exc:
            raise ToolError(exc.message) from None


async def _get_upstream(deps: Dependencies, key: str) -> dict[str, Any]:
    base = deps.config.upstream_url
    if not base or deps.http is None:
        raise ToolError("no upstream configured (set --upstream-url or MCPTRACE_UPSTREAM_URL)")
    async with downstream("upstream", f"GET /items/{key}") as call:
        try:
            with deps.guard("upstream", call):
                try:
                    url = f"{base.rstrip('/')}/items/{quote(key, safe='')}"  # the key stays one path segment
                    response = await deps.http.get(url, timeout=deps.config.upstream_timeout)
                except httpx.TimeoutException:
                    call.fail("timeout")
                    raise ToolError(f"upstream timed out after {deps.config.upstream_timeout:g}s") from None
                except httpx.HTTPError as exc:
                    call.fail(type(exc).__name__)
                    raise ToolError(f"upstream unreachable: {type(exc).__name__}") from None
                if response.status_code >= 400:
                    call.fail(f"HTTP {response.status_code}")
                    raise ToolError(f"upstream answered HTTP {response.status_code}")
                try:
                    data: dict[str, Any] = response.json()
                except ValueError:
                    call.fail("invalid JSON")
                    raise ToolError("upstream answered something that is not JSON") from None
        except DownstreamError as exc:
            raise ToolError(exc.message) from None
        return data


def register_tools(server: MCPServer[Any], deps: Dependencies) -> None:
    """Add the five bundled tools to `server`."""

    @server.tool(description="Search the tenant's catalogue in the embedded database.")
    async def search_database(query: str, limit: int = 10) -> dict[str, Any]:
        if not 1 <= limit <= 50:
            raise ToolError("limit must be between 1 and 50")
        if len(query) > 200:
            raise ToolError("query must be at most 200 characters")
        rows = await _query_db(deps, "search", deps.db.search, _tenant(), query, limit)
        return {"rows": rows, "count": len(rows)}

    @server.tool(description="Read the service's public configuration (cheap).")
    async def get_config(key: str | None = None) -> dict[str, Any]:
        if key is None:
            return _PUBLIC_CONFIG
        if key not in _PUBLIC_CONFIG:
            raise ToolError(f"unknown config key; known: {', '.join(sorted(_PUBLIC_CONFIG))}")
        return {key: _PUBLIC_CONFIG[key]}

    @server.tool(description="Build a report: several database and upstream calls, with progress (slow).")
    async def run_report(ctx: Context, category: str | None = None) -> dict[str, Any]:
        steps = deps.config.report_steps
        started = time.monotonic()
        sections: list[dict[str, Any]] = []
        tenant = _tenant()
        for step in range(steps):
            await ctx.report_progress(step, steps, f"section {step + 1} of {steps}")
            if step % 2 == 0:
                sections.append(await _query_db(deps, "aggregate", deps.db.aggregate, tenant, category))
            elif deps.config.upstream_url:
                sections.append(await _get_upstream(deps, f"report-{step}"))
            await anyio.sleep(deps.config.report_step_seconds)
        await ctx.report_progress(steps, steps, "done")
        return {"tenant": tenant, "sections": sections, "seconds": round(time.monotonic() - started, 3)}

    @server.tool(description="Fetch a document from the upstream HTTP API.")
    async def fetch_upstream(key: str) -> dict[str, Any]:
        if not key or len(key) > 100 or "/" in key or ".." in key:
            raise ToolError("key must be 1-100 characters without '/' or '..'")
        return await _get_upstream(deps, key)

    @server.tool(description="Answer 'pong'. Non-destructive; for probes and gates.")
    async def ping() -> str:
        return "pong"
