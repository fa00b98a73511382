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


#: Verdicts kept, by the headers they depend on; a client varying them at will only empties the cache.
VERDICTS_KEPT = 256


class HostCheckMiddleware:
    """The SDK's check, run once per combination of the headers it reads (`Host`, `Origin`, `Content-Type`
    and whether it is a POST): every call of one client carries the same ones, so its verdict is kept."""

    def __init__(self, app: ASGIApp, *, rules: TransportSecuritySettings, path: str = "/mcp") -> None:
        self.app = app
        self.check = TransportSecurityMiddleware(rules)
        # Each refusal is a `request_rejected` line already; the SDK's plain-text warning would let any
        # client write to stderr at will.
        logging.getLogger(TransportSecurityMiddleware.__module__).setLevel(logging.ERROR)
        self.path = path.rstrip("/")
        #: HTTP status of the refusal (None: accepted), by (is POST, Host, Origin, Content-Type).
        self.verdicts: dict[tuple[bool, bytes | None, bytes | None, bytes | None], int | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        is_post = scope["method"] == "POST"
        key = (is_post, *_first_values(scope["headers"]))
        try:
            status = self.verdicts[key]
        except KeyError:
            refusal = await self.check.validate_request(Request(scope), is_post=is_post)
            status = None if refusal is None else refusal.status_code
            if len(self.verdicts) >= VERDICTS_KEPT:
                self.verdicts.clear()
            self.verdicts[key] = status
        if status is None:
            await self.app(scope, receive, send)
            return
        await send_jsonrpc_error(send, status, INVALID_REQUEST, _MESSAGES.get(status, "Bad Request"))


def _first_values(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The first `Host`, `Origin` and `Content-Type` values, as the SDK's check reads them."""
    host = origin = content_type = None
    for name, value in headers:
        if name == b"host":
            host = value if host is None else host
        elif name == b"origin":
            origin = value if origin is None else origin
        elif name == b"content-type":
            content_type = value if content_type is None else content_type
    return host, origin, content_type
