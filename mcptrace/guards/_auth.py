"""ASGI layer: who is calling, from the request's headers alone, before any byte of its body is read.

With auth on, every request to the MCP endpoint needs a bearer token: an opaque
token from the token store or a JWT from the configured issuer, not revoked
(neither in the store nor in the revocations shared through Redis). Without
one, the request gets 401 at once, with `WWW-Authenticate: Bearer ...
resource_metadata="…"` (RFC 9728, how MCP clients find the authorization
server), a JSON-RPC error body and `Connection: close`: its body is never read,
whatever it declared. Each refusal is recorded as a `request_refused` line
(reason `unauthenticated`); the token itself is never logged.

On success the caller's `(caller_id, tenant)` goes to `scope["state"]` for the
request log and the tools, and the full `Identity` for the layers after this
one. Without auth the caller is known only later (its declared name is in the
body, or on its session); this layer then only opens the request's `GuardSlot`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import AuthError
from mcptrace.guards._identity import GUARD_SLOT_KEY, IDENTITY_DETAIL_KEY, GuardSlot, Identity
from mcptrace.guards._jwt import JwtVerifier, looks_like_jwt
from mcptrace.guards._refusals import Refusals
from mcptrace.guards._revocations import RevokedKeys
from mcptrace.guards._stats import GuardStats
from mcptrace.guards._tokens import TokenStore
from mcptrace.middleware._requestlog import IDENTITY_STATE_KEY
from mcptrace.middleware._requests import mark_response_logged, request_id_of, send_jsonrpc_error

RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class Authenticator:
    """Opaque tokens go to the token store, JWTs to the issuer's keys; shared revocations apply to both."""

    def __init__(
        self,
        *,
        store: TokenStore | None = None,
        jwt: JwtVerifier | None = None,
        revoked: RevokedKeys | None = None,
    ) -> None:
        self.store = store
        self.jwt = jwt
        self.revoked = revoked

    async def authenticate(self, token: str) -> Identity:
        if self.jwt is not None and (self.store is None or looks_like_jwt(token)):
            identity = await self.jwt.authenticate(token)
        elif self.store is not None:
            identity = self.store.authenticate(token)
        else:
            raise AuthError("no credentials are accepted")
        if self.revoked is not None and identity.key in self.revoked:
            raise AuthError("invalid or revoked token")
        return identity


def bearer_token(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


def resource_url(scope: Scope, path: str) -> str:
    """An absolute URL on this server as the client addressed it (Host header, else the socket)."""
    host = header(scope, b"host")
    if not host or not _SAFE_HOST.match(host):  # it is echoed in a quoted header: nothing odd gets through
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{path}"


class AuthMiddleware:
    """Opens the request's `GuardSlot`; with an `authenticator`, refuses requests without a valid token."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator | None,
        refusals: Refusals,
        stats: GuardStats,
        protected_path: str = "/mcp",
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.refusals = refusals
        self.stats = stats
        self.path = protected_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        slot = GuardSlot(request_id_of(scope), client[0] if client else None)
        state: dict[str, Any] = {**scope.get("state", {}), GUARD_SLOT_KEY: slot}
        if self.authenticator is not None:
            token = bearer_token(scope)
            try:
                if token is None:
                    raise AuthError("missing bearer token")
                identity = await self.authenticator.authenticate(token)
            except AuthError as exc:
                await self._refuse(scope, send, slot, exc, missing=token is None)
                return
            self.stats.auth_ok += 1
            slot.identity = identity
            state[IDENTITY_STATE_KEY] = (identity.caller_id, identity.tenant)
            state[IDENTITY_DETAIL_KEY] = identity
        await self.app({**scope, "state": state}, receive, send)

    async def _refuse(self, scope: Scope, send: Send, slot: GuardSlot, exc: AuthError, *, missing: bool) -> None:
        self.stats.auth_failures[exc.reason] += 1
        mark_response_logged(scope)  # recorded here as request_refused, not again as request_rejected
        metadata = resource_url(scope, RESOURCE_METADATA_PATH)
        challenge = f'Bearer realm="mcptrace", resource_metadata="{metadata}"'
        if not missing:
            challenge += f', error="invalid_token", error_description="{exc.reason}"'
        self.refusals.record(
            f.R_UNAUTHENTICATED, slot.request_id, http_status=401, client_address=slot.client_address,
            error=exc.reason, method=scope["method"], session_id=header(scope, b"mcp-session-id"),
        )
        await send_jsonrpc_error(
            send, 401, exc.code, exc.message,
            # Not one byte of the body is read: the connection closes after the answer.
            headers=[(b"www-authenticate", challenge.encode()), (b"connection", b"close")],
        )


def resource_metadata(
    *,
    authorization_servers: list[str],
    scopes: list[str] | None = None,
) -> Callable[[Scope], dict[str, Any]]:
    """The body of `/.well-known/oauth-protected-resource` for a request (RFC 9728)."""

    def document(scope: Scope) -> dict[str, Any]:
        return {
            "resource": resource_url(scope, "/mcp"),
            "authorization_servers": authorization_servers,
            "bearer_methods_supported": ["header"],
            "scopes_supported": scopes or [],
            "resource_name": "mcptrace",
        }

    return document
