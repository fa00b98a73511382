"""ASGI layer: a request id for every HTTP request, and a warning for every rejection.

The id (minted, or a proxy's `X-Request-ID` when it is well-formed) is put in
the request headers for the SDK middleware to find, in `scope["state"]` for the
layers in between, and echoed in the `X-Request-ID` response header of every
answer, refusals included. A POST that declares both Content-Length and
Transfer-Encoding gets 400 and a closed connection. Every answer with an HTTP
status >= 400 is logged once as `request_rejected`, with its JSON-RPC code,
unless another layer logged it, before the answer's last byte leaves. Pending
log lines are written to the OS (`EventLogger.commit`) as an answer starts and
before each of its body chunks (an SSE stream's events included), so a line
logged before a response or an event is on record before the client can see
it. Bodies are read later, by the admission layer, once the guards have judged
the request's headers.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import INVALID_REQUEST
from mcptrace.middleware._ids import accept_request_id, new_request_id
from mcptrace.telemetry._log import EventLogger

_HEADER = f.REQUEST_ID_HEADER.encode()
_ERROR_BODY_KEPT = 2048
_LOGGED_TEXT = 200

#: scope["state"] key of a `LoggedFlag`: set by whichever layer logs the request's answer itself.
RESPONSE_LOGGED_STATE_KEY = "mcptrace.response_logged"
#: scope["state"] key of the request's id (also in the `X-Request-ID` request header).
REQUEST_ID_STATE_KEY = "mcptrace.request_id"


class LoggedFlag:
    """Shared by reference, so it survives the copies of scope["state"] that inner layers make."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


def mark_response_logged(scope: Scope) -> None:
    """Tell the request-id layer this request's refusal or answer is logged already (once is enough)."""
    flag = scope.get("state", {}).get(RESPONSE_LOGGED_STATE_KEY)
    if isinstance(flag, LoggedFlag):
        flag.done = True


def request_id_of(scope: Scope) -> str | None:
    """The id `RequestIdMiddleware` gave this request."""
    value = scope.get("state", {}).get(REQUEST_ID_STATE_KEY)
    return value if isinstance(value, str) else None


def jsonrpc_error_body(code: int, message: str, data: Any = None, *, msg_id: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": msg_id, "error": error})


async def send_jsonrpc_error(
    send: Send, status: int, code: int, message: str, *, headers: list[tuple[bytes, bytes]] | None = None,
    data: Any = None, msg_id: Any = None,
) -> None:
    body = jsonrpc_error_body(code, message, data, msg_id=msg_id)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, *, logger: EventLogger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != _HEADER]
        incoming = next((v for k, v in scope["headers"] if k == _HEADER), None)
        request_id = accept_request_id(incoming.decode("latin-1") if incoming else None) or new_request_id()
        headers.append((_HEADER, request_id.encode()))
        logged = LoggedFlag()
        state = {**scope.get("state", {}), RESPONSE_LOGGED_STATE_KEY: logged, REQUEST_ID_STATE_KEY: request_id}
        scope = {**scope, "headers": headers, "state": state}
        id_header = (_HEADER, request_id.encode())
        status_seen: list[int] = []
        error_body = bytearray()
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                message = {**message, "headers": [*message.get("headers", []), id_header]}
                self.logger.commit()  # what was logged before the answer starts is on record first
            elif message["type"] == "http.response.body":
                if status_seen and status_seen[0] >= 400 and len(error_body) < _ERROR_BODY_KEPT:
                    error_body.extend(message.get("body", b"")[:_ERROR_BODY_KEPT])
                # The end of the answer: a refusal is logged before its last byte leaves, never after.
                last = not message.get("more_body", False)
                if last and status_seen and status_seen[0] >= 400 and not logged.done:
                    logged.done = True
                    self._log_rejection(scope, request_id, status_seen[0], start, bytes(error_body))
                # Every chunk, not only the last: an SSE answer's event can carry a result (logged as it
                # passed through a proxy, or by another task) while its stream stays open.
                self.logger.commit()
            await send(message)

        if scope["method"] == "POST" and _conflicting_framing(scope):
            await send_jsonrpc_error(
                send_with_id, 400, INVALID_REQUEST,
                "Bad Request: Content-Length and Transfer-Encoding must not both be sent",
                headers=[(b"connection", b"close")],
            )  # logged by send_with_id, before the answer's last byte
            return

        await self.app(scope, receive, send_with_id)
        # A JSON-RPC error the SDK middleware already logged as `response_sent` is not logged twice; an
        # answer that never reached its last byte is logged here.
        if status_seen and status_seen[0] >= 400 and not logged.done:
            self._log_rejection(scope, request_id, status_seen[0], start, bytes(error_body))

    def _log_rejection(self, scope: Scope, request_id: str, status: int, start: float, body: bytes) -> None:
        session = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"mcp-session-id"), None)
        code, error = _error_of(body)
        version = next(
            (v[:64].decode("latin-1") for k, v in scope["headers"] if k == b"mcp-protocol-version"), None
        )
        self.logger.emit(
            f.EV_REQUEST_REJECTED, "warning", **{
                f.REQUEST_ID: request_id, f.SESSION_ID: session[:_LOGGED_TEXT] if session else None,
                f.HTTP_STATUS: status, f.ERROR_CODE: code, f.ERROR: error, f.PROTOCOL_VERSION: version,
                f.TRANSPORT: "http", f.MESSAGE: _request_line(scope),
                f.DURATION_MS: round((time.perf_counter() - start) * 1000, 3),
            },
        )


def _request_line(scope: Scope) -> str:
    return f"{scope['method']} {scope['path']}"[:_LOGGED_TEXT]


def _error_of(body: bytes) -> tuple[int | None, str | None]:
    """The JSON-RPC code and message of an error response body, when it is one; else its first words."""
    try:
        error = orjson.loads(body).get("error")
        code, message = error.get("code"), error.get("message")
        return (code if isinstance(code, int) else None), str(message)[:_LOGGED_TEXT]
    except (orjson.JSONDecodeError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        return None, (text[:_LOGGED_TEXT] or None)


def _conflicting_framing(scope: Scope) -> bool:
    """Both Content-Length and Transfer-Encoding: the request smuggling shape; refused, never guessed at."""
    names = {k for k, _ in scope["headers"]}
    return b"content-length" in names and b"transfer-encoding" in names


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
