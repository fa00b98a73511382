"""SDK middleware: what the guards do once the SDK has parsed a request.

`RateLimitMiddleware` limits callers the HTTP layer did not admit: on stdio,
where the caller is known only by the name its client declared. It runs first
in the SDK chain, so a refused call is recorded once, as a `request_refused`
line (nothing else is logged for it), and answered with the JSON-RPC error
-32000 "Rate limit exceeded" and `data.retryAfterMs`.

`ToolFilterMiddleware` lists only the tools a caller's token allows, so agents
are not invited to call tools they would be refused.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError

from mcptrace import _fields as f
from mcptrace._errors import RateLimitedError
from mcptrace.guards._admission import ADMITTED_STATE_KEY
from mcptrace.guards._identity import ANONYMOUS, IDENTITY_DETAIL_KEY, Identity
from mcptrace.guards._limits import SCOPE_SUSPENDED
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.guards._refusals import Refusals
from mcptrace.middleware._clientmeta import client_info
from mcptrace.middleware._ids import new_request_id


class RateLimitMiddleware:
    def __init__(self, limiter: RateLimiter, refusals: Refusals) -> None:
        self.limiter = limiter
        self.refusals = refusals

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        scope = getattr(ctx.request, "scope", None)
        if ctx.request_id is None or (scope is not None and scope.get("state", {}).get(ADMITTED_STATE_KEY)):
            return await call_next(ctx)
        try:
            caller = client_info(ctx)[0] or ANONYMOUS
        except Exception:
            caller = ANONYMOUS
        params = ctx.params or {}
        tool = params.get("name") if ctx.method == "tools/call" else None
        tool = tool if isinstance(tool, str) else None
        decision = await self.limiter.check(caller, tool)
        if decision.allowed:
            return await call_next(ctx)
        suspended = decision.scope == SCOPE_SUSPENDED
        self.refusals.record(
            f.R_SUSPENDED if suspended else f.R_RATE_LIMITED, new_request_id(), caller_id=caller,
            tool_name=tool, method=ctx.method, retry_after_ms=decision.retry_after_ms,
            limit_scope=decision.scope, error="caller suspended" if suspended else "rate limit exceeded",
        )
        self.refusals.logger.commit()  # the error raised below is the answer: its line reaches the OS first
        error = RateLimitedError(decision.retry_after_ms, scope=decision.scope or "caller")
        raise MCPError(error.code, error.message, error.data)


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
