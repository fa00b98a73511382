"""Outermost ASGI layer: a suspended caller's requests refused from their bearer token alone.

A flood comes from a caller that is soon suspended, and then every one of its
requests is refused. Through the whole chain (request id, Host check, token
check, session owner, admission) a refusal cost about a third of a served
`ping`; here it is one dictionary look-up on the `Authorization` header and a
fixed answer: the same 429, JSON-RPC error, `Retry-After` and `X-Request-ID`
the admission layer gives, recorded in the same aggregated refusal lines.

Only tokens the admission layer itself found suspended are known here (it
tells `SuspendedTokens.remember`), and only while the rate limiter still holds
the suspension: this layer can only refuse a request the chain would refuse,
never admit one. With auth off a header names nobody, so nothing is remembered.
A refused request's Host and Origin are not checked: nothing is served to it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import RateLimitedError
from mcptrace.guards._identity import Identity
from mcptrace.guards._limits import SCOPE_SUSPENDED
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.guards._refusals import Refusals
from mcptrace.middleware._ids import accept_request_id, new_request_id
from mcptrace.middleware._requests import jsonrpc_error_body

#: Suspended tokens remembered at most (the oldest are forgotten first: they then take the long way).
MAX_REMEMBERED = 10_000
_ID_HEADER = f.REQUEST_ID_HEADER.encode()
_CONTENT_TYPE = (b"content-type", b"application/json")


class SuspendedTokens:
    """The `Authorization` header values of callers the admission layer refused as suspended."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.known: dict[bytes, Identity] = {}

    def remember(self, scope: Scope, identity: Identity) -> None:
        if not self.enabled or not identity.authenticated:
            return
        value = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if value is None:
            return
        if value not in self.known and len(self.known) >= MAX_REMEMBERED:
            self.known.pop(next(iter(self.known)))
        self.known[value] = identity


class SuspendedShortcut:
    """Answers a remembered suspended token's request to the MCP endpoint before any other layer runs."""

    def __init__(
        self, app: ASGIApp, *, tokens: SuspendedTokens, limiter: RateLimiter, refusals: Refusals,
        path: str = "/mcp",
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.limiter = limiter
        self.refusals = refusals
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tokens.known and scope["type"] == "http" and scope["path"] == self.path:
            answer = self.refusal(scope["headers"], scope.get("client"))
            if answer is not None:
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def refusal(
        self, headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The answer (status, headers, body) to a request to the MCP endpoint with these headers when its
        token is remembered suspended and still is (the refusal then recorded); None to pass it on."""
        known = self.tokens.known
        if not known:
            return None
        for key, value in headers:
            if key == b"authorization":
                identity = known.get(value)
                if identity is None:
                    return None
                left_ms = self.limiter.suspended_for(identity.limit_key)
                if left_ms is None:
                    del known[value]  # the suspension is over: the whole chain judges it again
                    return None
                return self._refuse(headers, client, identity, left_ms)
        return None

    def _refuse(
        self, headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None, identity: Identity, left_ms: int,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        incoming = session_id = tool = method = None
        for key, value in headers:
            if key == _ID_HEADER:
                incoming = value.decode("latin-1")
            elif key == b"mcp-session-id":
                session_id = value.decode("latin-1")
            elif key == b"mcp-method":
                method = value.decode("latin-1")
            elif key == b"mcp-name":
                tool = value.decode("latin-1")
        request_id = accept_request_id(incoming) or new_request_id()
        self.refusals.record(
            f.R_SUSPENDED, request_id, http_status=429, caller_id=identity.caller_id,
            tenant=identity.tenant or None, principal=identity.principal,
            client_address=client[0] if client else None, tool_name=tool if method == "tools/call" else None,
            method=method, retry_after_ms=left_ms, limit_scope=SCOPE_SUSPENDED, error="caller suspended",
            session_id=session_id,
        )
        error = RateLimitedError(left_ms, scope=SCOPE_SUSPENDED)
        body = jsonrpc_error_body(error.code, error.message, error.data)
        retry_after = max(1, -(-left_ms // 1000))  # whole seconds, rounded up
        return 429, [
            _CONTENT_TYPE, (b"content-length", b"%d" % len(body)), (b"retry-after", b"%d" % retry_after),
            (_ID_HEADER, request_id.encode()),
        ], body
