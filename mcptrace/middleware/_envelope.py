"""ASGI layer: a POST whose body is not one JSON-RPC 2.0 message is refused here, in plain words.

The SDK answers such bodies itself, but in the handshake era it calls every
shape problem `-32602` and returns pydantic's full validation report (input
values, model names, documentation links). This layer answers first, with the
codes JSON-RPC assigns: `-32700` for bytes that are not JSON, `-32600` for JSON
that is not a single JSON-RPC message (batches included: MCP dropped them). It
checks the envelope only; methods and params stay the SDK's business.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace._errors import INVALID_REQUEST, PARSE_ERROR
from mcptrace.middleware._requests import read_body, replay_body, send_jsonrpc_error

_INT64 = (-(2**63), 2**63 - 1)


def envelope_problem(body: bytes) -> tuple[int, str, Any] | None:
    """(code, message, id to echo) when `body` is not one JSON-RPC 2.0 message; None when it is."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return PARSE_ERROR, f"Parse error: {exc}", None
    if isinstance(message, list):
        return INVALID_REQUEST, "Invalid Request: batches are not supported; send one message a request", None
    if not isinstance(message, dict):
        return INVALID_REQUEST, "Invalid Request: the body must be a JSON-RPC 2.0 object", None
    has_id = "id" in message
    msg_id = message.get("id")
    id_ok = _valid_id(msg_id)
    echo = msg_id if id_ok else None
    if message.get("jsonrpc") != "2.0":
        return INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', echo
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            return INVALID_REQUEST, 'Invalid Request: "method" must be a non-empty string', echo
        if has_id and not id_ok:
            return INVALID_REQUEST, 'Invalid Request: "id" must be a string or a 64-bit integer', None
        if "params" in message and not isinstance(message["params"], dict | None):
            return INVALID_REQUEST, 'Invalid Request: "params" must be an object', echo
        return None
    if "result" in message or "error" in message:  # a client's answer to a server request
        if "result" in message and "error" in message:
            return INVALID_REQUEST, 'Invalid Request: a response carries "result" or "error", not both', echo
        if not (id_ok or (msg_id is None and "error" in message)):
            return INVALID_REQUEST, 'Invalid Request: "id" must be a string or a 64-bit integer', None
        return None
    return INVALID_REQUEST, 'Invalid Request: a message needs "method", "result" or "error"', echo


def _valid_id(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]


class EnvelopeMiddleware:
    """Refuse malformed JSON-RPC envelopes on `path` with HTTP 400 before the SDK sees them."""

    def __init__(self, app: ASGIApp, *, path: str = "/mcp") -> None:
        self.app = app
        self.path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive, sys.maxsize) or b""  # the size limit is enforced outside
        receive = replay_body(body, receive)
        problem = envelope_problem(body)
        if problem is None:
            await self.app(scope, receive, send)
            return
        code, text, msg_id = problem
        await send_jsonrpc_error(send, 400, code, text, msg_id=msg_id)
