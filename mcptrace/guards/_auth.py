"""ASGI layer: a bearer token on every request to the MCP endpoint, or 401.

Runs inside the request-id layer, so each refusal is logged as `auth_failed`
with the request's id; the token itself is never logged. On success the
caller's `(caller_id, tenant)` goes to `scope["state"]` for the request log
and the tools, and the full `Identity` for the admission layer.

A 401 carries `WWW-Authenticate: Bearer ... resource_metadata="…"`, pointing at
the protected-resource metadata (RFC 9728) that MCP clients use to discover the
authorization server, and a JSON-RPC error body that MCP clients surface.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import AuthError
from mcptrace.guards._backend import LimitBackend
from mcptrace.guards._identity import IDENTITY_DETAIL_KEY, Identity
from mcptrace.guards._jwt import JwtVerifier, looks_like_jwt
from mcptrace.guards._stats import GuardStats
from mcptrace.guards._tokens import TokenStore
from mcptrace.middleware._requestlog import IDENTITY_STATE_KEY
from mcptrace.middleware._requests import mark_response_logged, send_jsonrpc_error
from mcptrace.telemetry._log import EventLogger

RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class Authenticator:
    """Opaque tokens go to the token store, JWTs to the issuer's keys; shared revocations apply to both."""

    def __init__(
        self,
        *,
        store: TokenStore | None = None,
        jwt: JwtVerifier | None = None,
        revocations: LimitBackend | None = None,
    ) -> None:
        self.store = store
        self.jwt = jwt
        self.revocations = revocations

    async def authenticate(self, token: str) -> Identity:
        if self.jwt is not None and (self.store is None or looks_like_jwt(token)):
            identity = await self.jwt.authenticate(token)
        elif self.store is not None:
            identity = self.store.authenticate(token)
        else:
            raise AuthError("no credentials are accepted")
        if self.revocations is not None:
            try:
                revoked = await self.revocations.is_revoked(identity.key)
            except Exception:
                revoked = False  # the shared list is unreachable; the local store still decides
            if revoked:
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
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        logger: EventLogger,
        stats: GuardStats,
        protected_path: str = "/mcp",
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.logger = logger
        self.stats = stats
        self.path = protected_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        try:
            if token is None:
                raise AuthError("missing bearer token")
            identity = await self.authenticator.authenticate(token)
        except AuthError as exc:
            await self._refuse(scope, send, exc, missing=token is None)
            return
        self.stats.auth_ok += 1
        state = {
            **scope.get("state", {}),
            IDENTITY_STATE_KEY: (identity.caller_id, identity.tenant),
            IDENTITY_DETAIL_KEY: identity,
        }
        await self.app({**scope, "state": state}, receive, send)

    async def _refuse(self, scope: Scope, send: Send, exc: AuthError, *, missing: bool) -> None:
        self.stats.auth_failures[exc.reason] += 1
        mark_response_logged(scope)  # logged here as auth_failed, not again as request_rejected
        metadata = resource_url(scope, RESOURCE_METADATA_PATH)
        challenge = f'Bearer realm="mcptrace", resource_metadata="{metadata}"'
        if not missing:
            challenge += f', error="invalid_token", error_description="{exc.reason}"'
        self.logger.emit(
            f.EV_AUTH_FAILED,
            "warning",
            **{
                f.REQUEST_ID: header(scope, f.REQUEST_ID_HEADER.encode()),
                f.HTTP_STATUS: 401,
                f.ERROR: exc.reason,
                f.SESSION_ID: header(scope, b"mcp-session-id"),
                f.TRANSPORT: "http",
                f.MESSAGE: f"{scope['method']} {scope['path']}",
            },
        )
        await send_jsonrpc_error(
            send,
            401,
            exc.code,
            exc.message,
            headers=[(b"www-authenticate", challenge.encode())],
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
