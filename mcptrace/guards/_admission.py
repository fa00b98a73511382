"""ASGI layer: refuse a caller's request before any session or tool work when it may not run.

For an authenticated POST to the MCP endpoint, reads the method and tool name
from the body the request-id layer already buffered, then refuses with a
JSON-RPC error when the token does not allow the tool (403, -32003) or the
caller is suspended or out of tokens (429 with `Retry-After`, -32000 "Rate
limit exceeded", `data.retryAfterMs`). Unauthenticated callers are limited
later, by the SDK middleware in `_sdk.py`, once their declared name is known.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import ForbiddenError, RateLimitedError
from mcptrace.guards._auth import header
from mcptrace.guards._identity import IDENTITY_DETAIL_KEY, Identity
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.middleware._requests import mark_response_logged, read_body, replay_body
from mcptrace.telemetry._log import EventLogger

#: scope["state"] flag: this request was already admitted here, the SDK middleware need not check again.
ADMITTED_STATE_KEY = "mcptrace.admitted"


def requested_calls(body: bytes) -> tuple[Any, list[str | None]]:
    """(JSON-RPC id, method-or-tool per message) of a body; tools/call messages give their tool name."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, []
    messages = message if isinstance(message, list) else [message]
    first_id = None
    calls: list[str | None] = []
    for item in messages:
        if not isinstance(item, dict):
            continue
        if first_id is None:
            first_id = item.get("id")
        if item.get("method") == "tools/call":
            params = item.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            calls.append(name if isinstance(name, str) else None)
        else:
            calls.append(None)
    return first_id, calls


class AdmissionMiddleware:
    def __init__(
        self, app: ASGIApp, *, limiter: RateLimiter, logger: EventLogger, path: str = "/mcp"
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.logger = logger
        self.path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        identity: Identity | None = scope.get("state", {}).get(IDENTITY_DETAIL_KEY)
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or identity is None
            or scope["path"].rstrip("/") != self.path
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive, 1 << 62) or b""
        receive = replay_body(body, receive)
        jsonrpc_id, calls = requested_calls(body)
        request_id = header(scope, f.REQUEST_ID_HEADER.encode())
        for tool in calls:
            if tool is not None and not identity.allows(tool):
                mark_response_logged(scope)  # logged as auth_failed, not again as request_rejected
                await self._forbid(send, identity, tool, jsonrpc_id, request_id)
                return
        for tool in calls or [None]:
            decision = await self.limiter.check(identity.caller_id, tool, request_id=request_id)
            if not decision.allowed:
                mark_response_logged(scope)  # logged as rate_limited, not again as request_rejected
                error = RateLimitedError(decision.retry_after_ms, scope=decision.scope or "caller")
                await _send_error(
                    send,
                    429,
                    jsonrpc_id,
                    error.code,
                    error.message,
                    error.data,
                    headers=[
                        (b"retry-after", str(max(1, math.ceil(decision.retry_after_ms / 1000))).encode())
                    ],
                )
                return
        scope = {**scope, "state": {**scope.get("state", {}), ADMITTED_STATE_KEY: True}}
        await self.app(scope, receive, send)

    async def _forbid(
        self,
        send: Send,
        identity: Identity,
        tool: str,
        jsonrpc_id: Any,
        request_id: str | None,
    ) -> None:
        self.limiter.stats.forbidden += 1
        self.logger.emit(
            f.EV_AUTH_FAILED,
            "warning",
            **{
                f.REQUEST_ID: request_id,
                f.CALLER_ID: identity.caller_id,
                f.TENANT: identity.tenant,
                f.TOOL_NAME: tool,
                f.HTTP_STATUS: 403,
                f.ERROR: "tool not allowed for this token",
                f.TRANSPORT: "http",
            },
        )
        error = ForbiddenError(tool)
        await _send_error(send, 403, jsonrpc_id, error.code, error.message, error.data)


async def _send_error(
    send: Send,
    status: int,
    jsonrpc_id: Any,
    code: int,
    message: str,
    data: Any,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    if not isinstance(jsonrpc_id, (str, int)) or isinstance(jsonrpc_id, bool):
        jsonrpc_id = None
    body = orjson.dumps(
        {"jsonrpc": "2.0", "id": jsonrpc_id, "error": {"code": code, "message": message, "data": data}}
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
