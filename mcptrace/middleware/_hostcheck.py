"""ASGI layer: DNS-rebinding protection on the MCP endpoint, answered as JSON-RPC errors.

A server on loopback accepts only loopback `Host` headers (with any port) and,
when a browser sends one, loopback `Origin`s: a web page that rebinds its own
name to 127.0.0.1 cannot reach the tools. The rule is the SDK's own
(`TransportSecuritySettings`, checked by its public `validate_request`) with the
lists the SDK uses for a loopback server, applied here, before the guards and
before the body, so that the refusal is what the docs promise: HTTP 421
(`Host`) or 403 (`Origin`) with a JSON-RPC error, logged as `request_rejected`.
The same call checks a POST's `Content-Type` (400). The SDK's own host check is
turned off (`transport_security()`): one place decides.
"""

from __future__ import annotations

import logging

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace._errors import INVALID_REQUEST
from mcptrace.middleware._requests import send_jsonrpc_error

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

_MESSAGES = {
    421: "Misdirected Request: the Host header names no address this server answers on",
    403: "Forbidden: requests from this Origin are not accepted",
    400: "Bad Request: Content-Type must be application/json",
}


def host_rules(host: str) -> TransportSecuritySettings:
    """The rule for a server bound to `host`: loopback names only on loopback; off elsewhere (a proxy decides)."""
    if host in LOOPBACK_NAMES:
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def transport_security() -> TransportSecuritySettings:
    """What the SDK gets: its check off, since this layer already made it."""
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class HostCheckMiddleware:
    def __init__(self, app: ASGIApp, *, rules: TransportSecuritySettings, path: str = "/mcp") -> None:
        self.app = app
        self.check = TransportSecurityMiddleware(rules)
        # Each refusal is a `request_rejected` line already; the SDK's plain-text warning would let any
        # client write to stderr at will.
        logging.getLogger(TransportSecurityMiddleware.__module__).setLevel(logging.ERROR)
        self.path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        refusal = await self.check.validate_request(Request(scope), is_post=scope["method"] == "POST")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status = refusal.status_code
        await send_jsonrpc_error(send, status, INVALID_REQUEST, _MESSAGES.get(status, "Bad Request"))
