"""ASGI layer: the SDK's refusal at its session cap, turned into a refusal a client can act on.

The SDK's session manager keeps at most `max_sessions` handshake-era sessions
open and answers one more `initialize` with HTTP 503, `-32603` "Too many open
sessions" and no hint of when to try again. This layer sits right around the
SDK's app and replaces that answer with HTTP 503, `Retry-After`, `-32000` and a
message naming the limit, records it once as a `request_refused` line (reason
`session_cap`, `limit_scope` `server`, with `retry_after_ms`) and counts it for
the metrics. (A principal's own quota of sessions is the admission layer's.)

Only a POST without `Mcp-Session-Id` can open a session, and a request on the
2026-07-28 wire never does: every other request passes straight through.
Status 503 on that path has no other source in the SDK.
"""

from __future__ import annotations

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import SERVER_ERROR
from mcptrace.guards._identity import slot_of
from mcptrace.guards._refusals import Refusals
from mcptrace.middleware._requests import mark_response_logged, request_id_of, send_jsonrpc_error

#: Seconds a refused client is told to wait: sessions free up as clients end them or they go idle.
RETRY_AFTER_SECONDS = 5

_SESSION_HEADER = b"mcp-session-id"
_VERSION_HEADER = b"mcp-protocol-version"
_HANDSHAKE_VERSIONS = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)


def may_open_session(scope: Scope) -> bool:
    """A handshake-era POST without a session id: the only request the session cap can refuse."""
    if scope["method"] != "POST":
        return False
    for key, value in scope["headers"]:
        if key == _SESSION_HEADER:
            return False
        if key == _VERSION_HEADER and value not in _HANDSHAKE_VERSIONS:
            return False
    return True


class SessionLimitMiddleware:
    """Wraps the SDK's Streamable HTTP app; `refused` counts the requests turned away at the cap."""

    def __init__(
        self, app: ASGIApp, *, max_sessions: int, refusals: Refusals, retry_after: int = RETRY_AFTER_SECONDS,
    ) -> None:
        self.app = app
        self.max_sessions = max_sessions
        self.refusals = refusals
        self.retry_after = retry_after
        self.refused = 0

    @property
    def message(self) -> str:
        return f"Server is at its session limit of {self.max_sessions} open sessions; retry in {self.retry_after} s"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not may_open_session(scope):
            await self.app(scope, receive, send)
            return
        refused = False

        async def watch(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 503:
                refused = True
            if not refused:
                await send(message)

        await self.app(scope, receive, watch)
        if refused:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        self.refused += 1
        retry_ms = self.retry_after * 1000
        mark_response_logged(scope)
        slot = slot_of(scope)
        identity = slot.identity if slot is not None else None
        self.refusals.record(
            f.R_SESSION_CAP, request_id_of(scope), http_status=503, retry_after_ms=retry_ms, limit_scope="server",
            caller_id=identity.caller_id if identity else None, tenant=(identity.tenant or None) if identity else None,
            principal=identity.principal if identity else None, client_address=slot.client_address if slot else None,
            method="initialize",
            error=f"session limit reached: {self.max_sessions} open sessions (MCPTRACE_MAX_SESSIONS)",
        )
        await send_jsonrpc_error(
            send, 503, SERVER_ERROR, self.message,
            data={"maxSessions": self.max_sessions, "retryAfterMs": retry_ms},
            headers=[(b"retry-after", str(self.retry_after).encode())],
        )
