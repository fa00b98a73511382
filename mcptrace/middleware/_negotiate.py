"""ASGI layer: answer each POST in the form its `Accept` header asks for, never 406.

The SDK streams a POST's answer as SSE and insists on clients that accept both
`application/json` and `text/event-stream`. Clients that accept only one are
common (curl scripts, proxies, older SDKs). Per request, this layer:

- accepts both (or sent no `Accept`): passes through untouched;
- accepts only `text/event-stream`: lets the SDK stream as usual; where the
  SDK answers a quick request with a JSON body instead (its 2026-07-28 path
  does), re-frames that one successful JSON-RPC message as a single SSE event,
  encoded by `sse_starlette`, so the client gets the type it asked for;
- accepts only `application/json`: lets the SDK stream, reads the stream with
  `httpx2.EventSource`, and answers with the one JSON-RPC response it carries
  as a single `application/json` body. Progress and log notifications have no
  place in a JSON body and are dropped, as the SDK's own JSON mode does.

SSE responses also get `X-Accel-Buffering: no`, so nginx passes events through
as they are produced even where `proxy_buffering` was left on.
"""

from __future__ import annotations

from typing import Any

import httpx2
import orjson
from sse_starlette.event import ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcptrace._errors import INTERNAL_ERROR
from mcptrace.middleware._requests import send_jsonrpc_error

_BOTH = b"application/json, text/event-stream"
_SYNTHETIC_REQUEST = httpx2.Request("POST", "http://mcptrace.invalid/mcp")
_SSE_START_HEADERS = [
    (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]
_DROP_FROM_SSE = {b"content-type", b"content-length", b"cache-control", b"connection", b"transfer-encoding",
                  b"x-accel-buffering"}


def accepted(accept: str | None) -> tuple[bool, bool]:
    """(accepts JSON, accepts SSE) for an `Accept` header; a missing header accepts anything."""
    if not accept or not accept.strip():
        return True, True
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    wildcard = "*/*" in types
    return (
        wildcard or bool(types & {"application/json", "application/*"}),
        wildcard or bool(types & {"text/event-stream", "text/*"}),
    )


class NegotiationMiddleware:
    def __init__(self, app: ASGIApp, *, path: str = "/mcp") -> None:
        self.app = app
        self.path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        accept = None
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value.decode("latin-1")
        json_ok, sse_ok = accepted(accept)
        if scope["method"] != "POST":
            if scope["method"] == "GET" and accept is None:
                scope = _with_accept(scope, b"text/event-stream")
            await self.app(scope, receive, _mark_sse(send))
            return
        if not (json_ok or sse_ok):
            await self.app(scope, receive, send)  # the SDK's 406 is the honest answer here
            return
        scope = _with_accept(scope, _BOTH)
        if sse_ok and json_ok:
            await self.app(scope, receive, _mark_sse(send))
        elif sse_ok:
            await self.app(scope, receive, _json_as_sse(_mark_sse(send)))
        else:
            await _as_single_json(self.app, scope, receive, send)


def _with_accept(scope: Scope, accept: bytes) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k != b"accept"]
    headers.append((b"accept", accept))
    return {**scope, "headers": headers}


def _mark_sse(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            names = {k.lower() for k, _ in headers}
            is_sse = any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)
            if is_sse and b"x-accel-buffering" not in names:
                message = {**message, "headers": [*headers, (b"x-accel-buffering", b"no")]}
        await send(message)

    return wrapped


def _json_as_sse(send: Send) -> Send:
    """Re-frame a 2xx `application/json` answer as one SSE event; errors (4xx/5xx) pass as they are."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            is_json = any(k == b"content-type" and v.startswith(b"application/json") for k, v in headers)
            if is_json and 200 <= message["status"] < 300:
                start = message
                return
        elif message["type"] == "http.response.body" and start is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _DROP_FROM_SSE]
            event = ServerSentEvent(data=b"".join(chunks).decode("utf-8"), event="message").encode()
            await send({"type": "http.response.start", "status": start["status"],
                        "headers": [*kept, *_SSE_START_HEADERS]})
            await send({"type": "http.response.body", "body": event})
            return
        await send(message)

    return wrapped


async def _as_single_json(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    start: Message | None = None
    chunks: list[bytes] = []
    streaming = False

    async def capture(message: Message) -> None:
        nonlocal start, streaming
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            streaming = any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)
            if not streaming:
                await send(message)
            else:
                start = message
            return
        if message["type"] == "http.response.body" and streaming:
            chunks.append(message.get("body", b""))
            return
        await send(message)

    await app(scope, receive, capture)
    if not streaming or start is None:
        return
    response = _final_response(b"".join(chunks))
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _DROP_FROM_SSE]
    if response is None:
        await send_jsonrpc_error(send, 502, INTERNAL_ERROR, "The server produced no response", headers=headers)
        return
    body = orjson.dumps(response)
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def _final_response(stream: bytes) -> Any:
    """The last JSON-RPC response (result or error) in an SSE body, or None."""
    found = None
    response = httpx2.Response(
        200, headers={"content-type": "text/event-stream"}, content=stream, request=_SYNTHETIC_REQUEST
    )
    source = httpx2.EventSource(response)
    for event in source:
        if not event.data:
            continue
        try:
            message = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(message, dict) and "id" in message and ("result" in message or "error" in message):
            found = message
    return found
