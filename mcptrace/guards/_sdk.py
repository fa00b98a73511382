"""SDK middleware: what the guards do once the SDK has parsed a request.

`RateLimitMiddleware` limits callers the HTTP layer could not admit (no auth,
or stdio). Such callers are known only by the name their client declares, so
it runs inside the SDK chain, after the request log has bound the request id. A
refused call raises the JSON-RPC error -32000 "Rate limit exceeded" with
`data.retryAfterMs`, on every transport.

`ToolFilterMiddleware` lists only the tools a caller's token allows, so agents
are not invited to call tools they would be refused.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError

from mcptrace._errors import RateLimitedError
from mcptrace.guards._admission import ADMITTED_STATE_KEY
from mcptrace.guards._identity import IDENTITY_DETAIL_KEY, Identity
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.telemetry._context import current_call

ANONYMOUS = "anonymous"


class RateLimitMiddleware:
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        scope = getattr(ctx.request, "scope", None)
        if ctx.request_id is None or (scope is not None and scope.get("state", {}).get(ADMITTED_STATE_KEY)):
            return await call_next(ctx)
        call = current_call()
        caller = (call.caller_id if call else None) or ANONYMOUS
        tool = call.tool_name if call else None
        decision = await self.limiter.check(caller, tool, request_id=call.request_id if call else None)
        if not decision.allowed:
            error = RateLimitedError(decision.retry_after_ms, scope=decision.scope or "caller")
            raise MCPError(error.code, error.message, error.data)
        return await call_next(ctx)


class ToolFilterMiddleware:
    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list":
            return result
        scope = getattr(ctx.request, "scope", None)
        state = scope.get("state", {}) if scope is not None else {}
        identity: Identity | None = state.get(IDENTITY_DETAIL_KEY)
        if identity is None or identity.tools is None:
            return result
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            return {**result, "tools": [t for t in result["tools"] if identity.allows(t.get("name", ""))]}
        tools = getattr(result, "tools", None)
        if tools is None:
            return result
        allowed = [tool for tool in tools if identity.allows(tool.name)]
        return result.model_copy(update={"tools": allowed})  # type: ignore[union-attr]
