"""ASGI layer: may this request run? Decided from its headers first, then, only if it may, from its body.

For a request to the MCP endpoint whose caller is known from its headers (a
token, or the session it names), before any byte of the body is read:

0. a tool the token does not allow, when the headers name it (403, `-32003`);
1. rate limits: suspended (429, reason `suspended`) or out of tokens in its
   caller bucket, and in its tool bucket when the headers name the tool (the
   2026-07-28 wire's `Mcp-Name`) (429 with `Retry-After`, `-32000` "Rate limit
   exceeded", `data.retryAfterMs`, reason `rate_limited`);
2. a request that may open a session while the principal holds its quota of
   sessions: 429, `-32000`, `data.retryAfterMs` (reason `session_cap`);
3. the body budget (`middleware._body.BodyBudget`): 503 with `Retry-After`
   (reason `overloaded`).

Then the body is read (413 past `--max-body-bytes`, with the answer delivered
even to a client that sends its whole body first; 408 past the body deadline),
and what it asks is judged: a tool the token does not allow (403, `-32003`,
reason `forbidden`) and the tool's bucket when only the body named the tool. A
caller without auth is known from its body alone (its declared client name, at
its address) unless it named its session; it then goes through 1 and 2 here.

Every refusal is one `Refusals.record` (a `request_refused` line) and one
JSON-RPC error; nothing reaches the SDK. An admitted request carries
`ADMITTED_STATE_KEY`, so the SDK-level limiter (stdio) does not check it again.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import INVALID_REQUEST, SERVER_ERROR, ForbiddenError, RateLimitedError
from mcptrace.guards._identity import GuardSlot, Identity, declared_identity, slot_of
from mcptrace.guards._limits import SCOPE_CALLER, SCOPE_SUSPENDED
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.guards._refusals import Refusals
from mcptrace.guards._sessions import SessionTable, handshake_era
from mcptrace.guards._shortcut import SuspendedTokens
from mcptrace.middleware._body import BodyBudget, BodyProblem, declared_length, drain, read_body_within
from mcptrace.middleware._clientmeta import META_CLIENT_INFO
from mcptrace.middleware._requests import jsonrpc_error_body, mark_response_logged, replay_body, request_id_of
from mcptrace.telemetry._log import EventLogger

#: scope["state"] flag: this request was already admitted here, the SDK middleware need not check again.
ADMITTED_STATE_KEY = "mcptrace.admitted"
#: Seconds a client refused for its session quota or the body budget is told to wait.
SESSION_RETRY_SECONDS = 5
BUDGET_RETRY_SECONDS = 1


class Request:
    """What the admission layer knows of one JSON-RPC message, from its headers and, later, its body."""

    __slots__ = ("jsonrpc_id", "method", "tool", "client_name")

    def __init__(self, method: str | None = None, tool: str | None = None) -> None:
        self.jsonrpc_id: Any = None
        self.method = method
        self.tool = tool
        self.client_name: str | None = None

    @classmethod
    def from_headers(cls, scope: Scope) -> Request:
        method = tool = None
        for key, value in scope["headers"]:
            if key == b"mcp-method":
                method = value.decode("latin-1")
            elif key == b"mcp-name":
                tool = value.decode("latin-1")
        return cls(method, tool if method == "tools/call" else None)

    def read(self, body: bytes) -> None:
        """Method, id, tool and declared client name of the body (a malformed body leaves them unknown)."""
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        msg_id = message.get("id")
        if isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool):
            self.jsonrpc_id = msg_id
        method = message.get("method")
        self.method = method if isinstance(method, str) else None
        params = message.get("params")
        if not isinstance(params, dict):
            return
        name = params.get("name")
        self.tool = name if self.method == "tools/call" and isinstance(name, str) else None
        meta = params.get("_meta")
        info = meta.get(META_CLIENT_INFO) if isinstance(meta, dict) else None
        if info is None and self.method == "initialize":
            info = params.get("clientInfo")
        declared = info.get("name") if isinstance(info, dict) else None
        self.client_name = declared if isinstance(declared, str) else None


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        refusals: Refusals,
        logger: EventLogger,
        budget: BodyBudget,
        sessions: SessionTable | None,
        max_body_bytes: int,
        body_timeout: float,
        suspended: SuspendedTokens | None = None,
        path: str = "/mcp",
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.refusals = refusals
        self.logger = logger
        self.budget = budget
        self.sessions = sessions
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.suspended = suspended
        self.path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slot = slot_of(scope) if scope["type"] == "http" else None
        if slot is None or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        request = Request.from_headers(scope)
        opens = scope["method"] == "POST" and slot.session_id is None and handshake_era(scope)
        identity = slot.identity
        # -- from the headers
        if identity is not None:
            if request.tool is not None and not identity.allows(request.tool):
                await self._forbid(scope, send, slot, identity, request)
                return
            if not await self._within_limits(scope, send, slot, identity, request, request.tool, caller=True):
                return
            if opens and not await self._reserve_session(scope, send, slot, identity, request):
                return
        admitted = {**scope, "state": {**scope.get("state", {}), ADMITTED_STATE_KEY: True}}
        if scope["method"] != "POST":
            await self.app(admitted, receive, send)
            return
        # -- the body
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._body_refused(scope, receive, send, BodyProblem.TOO_LARGE)
            return
        who = identity.principal if identity is not None else f"@{slot.client_address}"
        held = declared if declared is not None else self.max_body_bytes
        over = self._reserve_body(who, held)
        if over is not None:
            await self._overloaded(scope, send, slot, identity, request, over)
            return
        try:
            body = await read_body_within(receive, limit=self.max_body_bytes, timeout=self.body_timeout)
            if body is BodyProblem.GONE:
                return
            if isinstance(body, BodyProblem):
                await self._body_refused(scope, receive, send, body)
                return
            self.budget.release(who, held - len(body))
            held = len(body)
            header_tool = request.tool
            request.read(body)
            # -- from the body
            if identity is None:  # without auth, and no session named: the client's declared name, here
                identity = slot.identity = declared_identity(request.client_name, slot.client_address)
                if not await self._within_limits(scope, send, slot, identity, request, request.tool, caller=True):
                    return
                if opens and not await self._reserve_session(scope, send, slot, identity, request):
                    return
            elif request.tool is not None:
                if not identity.allows(request.tool):
                    await self._forbid(scope, send, slot, identity, request)
                    return
                if request.tool != header_tool and not await self._within_limits(
                    scope, send, slot, identity, request, request.tool, caller=False
                ):
                    return
            await self.app(admitted, replay_body(body, receive), send)
        finally:
            self.budget.release(who, held)

    def _reserve_body(self, who: str, size: int) -> str | None:
        """None when `size` bytes are held for `who`; else which bound refused: `caller` (its share) or `server`."""
        if self.budget.reserve(who, size):
            return None
        return SCOPE_CALLER if self.budget.held_by(who) + size > self.budget.per_principal else "server"

    async def _within_limits(
        self, scope: Scope, send: Send, slot: GuardSlot, identity: Identity, request: Request,
        tool: str | None, *, caller: bool,
    ) -> bool:
        decision = await self.limiter.check(identity.limit_key, tool, include_caller=caller)
        if decision.allowed:
            return True
        suspended = decision.scope == SCOPE_SUSPENDED
        if suspended and self.suspended is not None:
            self.suspended.remember(scope, identity)  # its next requests are refused by the outermost layer
        self._record(
            f.R_SUSPENDED if suspended else f.R_RATE_LIMITED, scope, slot, identity, request, 429,
            retry_after_ms=decision.retry_after_ms, limit_scope=decision.scope, tool=tool,
            error="caller suspended" if suspended else f"rate limit exceeded ({decision.scope})",
        )
        error = RateLimitedError(decision.retry_after_ms, scope=decision.scope or SCOPE_CALLER)
        await _answer(send, 429, request, error.code, error.message, error.data,
                      retry_after=decision.retry_after_ms / 1000)
        return False

    async def _reserve_session(
        self, scope: Scope, send: Send, slot: GuardSlot, identity: Identity, request: Request
    ) -> bool:
        if self.sessions is None:
            return True
        slot.reservation = self.sessions.reserve(identity.principal)
        if slot.reservation is not None:
            return True
        cap = self.sessions.per_principal
        retry_ms = SESSION_RETRY_SECONDS * 1000
        self._record(
            f.R_SESSION_CAP, scope, slot, identity, request, 429, retry_after_ms=retry_ms,
            limit_scope=SCOPE_CALLER, error=f"caller holds its limit of {cap} open sessions",
        )
        message = f"Caller is at its limit of {cap} open sessions; end one or retry in {SESSION_RETRY_SECONDS} s"
        await _answer(send, 429, request, SERVER_ERROR, message, {"maxSessions": cap, "retryAfterMs": retry_ms},
                      retry_after=SESSION_RETRY_SECONDS)
        return False

    async def _overloaded(
        self, scope: Scope, send: Send, slot: GuardSlot, identity: Identity | None, request: Request, over: str
    ) -> None:
        retry_ms = BUDGET_RETRY_SECONDS * 1000
        bound = self.budget.total if over == "server" else self.budget.per_principal
        self._record(
            f.R_OVERLOADED, scope, slot, identity, request, 503, retry_after_ms=retry_ms, limit_scope=over,
            error=f"request bodies in flight at their limit ({bound} bytes, {over})",
        )
        message = f"Server is busy: request bodies in flight are at their limit; retry in {BUDGET_RETRY_SECONDS} s"
        await _answer(send, 503, request, SERVER_ERROR, message, {"retryAfterMs": retry_ms},
                      retry_after=BUDGET_RETRY_SECONDS)

    async def _forbid(self, scope: Scope, send: Send, slot: GuardSlot, identity: Identity, request: Request) -> None:
        assert request.tool is not None
        self.limiter.stats.forbidden += 1
        self._record(f.R_FORBIDDEN, scope, slot, identity, request, 403, tool=request.tool,
                     error="tool not allowed for this token")
        error = ForbiddenError(request.tool[:200])
        await _answer(send, 403, request, error.code, error.message, error.data)

    async def _body_refused(self, scope: Scope, receive: Receive, send: Send, problem: BodyProblem) -> None:
        """413 (the rest of the body read and discarded, so the client sees the answer) or 408 and close."""
        mark_response_logged(scope)
        too_large = problem is BodyProblem.TOO_LARGE
        self.logger.emit(f.EV_REQUEST_REJECTED, "warning", **{
            f.REQUEST_ID: request_id_of(scope), f.HTTP_STATUS: problem.value, f.ERROR_CODE: INVALID_REQUEST,
            f.ERROR: "request body too large" if too_large else "the request body did not arrive in time",
            f.TRANSPORT: "http", f.MESSAGE: f"{scope['method']} {scope['path']}"[:200],
        })
        if too_large:
            body = jsonrpc_error_body(INVALID_REQUEST, f"Request body exceeds {self.max_body_bytes} bytes")
            await _start(send, 413, body)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await drain(receive)
            await send({"type": "http.response.body", "body": b""})
            return
        body = jsonrpc_error_body(INVALID_REQUEST, f"Request body not received within {self.body_timeout:g} s")
        await _start(send, 408, body, [(b"connection", b"close")])
        await send({"type": "http.response.body", "body": body})

    def _record(
        self, reason: str, scope: Scope, slot: GuardSlot, identity: Identity | None, request: Request, status: int,
        *, retry_after_ms: int | None = None, limit_scope: str | None = None, tool: str | None = None,
        error: str | None = None,
    ) -> None:
        mark_response_logged(scope)  # recorded here as request_refused, not again as request_rejected
        self.refusals.record(
            reason, slot.request_id, http_status=status,
            caller_id=identity.caller_id if identity else None,
            tenant=(identity.tenant or None) if identity else None,
            principal=identity.principal if identity else None, client_address=slot.client_address,
            tool_name=tool or request.tool, method=request.method, retry_after_ms=retry_after_ms,
            limit_scope=limit_scope, error=error, session_id=slot.session_id,
        )


async def _start(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *(headers or [])],
    })


async def _answer(
    send: Send, status: int, request: Request, code: int, message: str, data: Any, *,
    retry_after: float | None = None,
) -> None:
    body = jsonrpc_error_body(code, message, data, msg_id=request.jsonrpc_id)
    headers = [(b"retry-after", str(max(1, math.ceil(retry_after))).encode())] if retry_after is not None else []
    await _start(send, status, body, headers)
    await send({"type": "http.response.body", "body": body})
