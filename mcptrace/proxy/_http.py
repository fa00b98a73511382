"""The HTTP reverse proxy: `mcptrace proxy --target URL`.

Each request to `/mcp` goes to the target with its body, its method and its
end-to-end headers (session id, protocol version, `Last-Event-ID`), plus what
the proxy adds: `X-Request-ID`, the W3C `traceparent` of the proxy's span, and
who is calling (`X-MCPTrace-Caller`, `X-MCPTrace-Tenant`, set only by the proxy:
a client cannot send them through). The proxy's own bearer token never
reaches the target. The answer comes back as the target gave it: a JSON body
re-encoded only when a result gets its request id, an SSE stream passed on
event by event as each arrives (decoded with `httpx2.EventSource`, encoded with
`sse_starlette`), anything else streamed through untouched. Failures to reach
the target, and 5xx answers, count against the target's circuit breaker; while
it is open, calls are refused at once with a JSON-RPC error.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.types import Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import DownstreamError, ProtocolError
from mcptrace.middleware._requestlog import IDENTITY_STATE_KEY
from mcptrace.middleware._requests import mark_response_logged, read_body
from mcptrace.proxy._observe import (
    BATCH,
    REQUEST,
    RESPONSE,
    TARGET_SERVICE,
    TO_CLIENT,
    TO_TARGET,
    Caller,
    Channel,
    ClientState,
    Pending,
    classify,
)
from mcptrace.proxy._service import ProxyService
from mcptrace.proxy._target import TargetClient
from mcptrace.proxy._telemetry import header_context

#: Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones the proxy sets itself.
_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length", b"accept-encoding",
    f.CALLER_HEADER.encode(), f.TENANT_HEADER.encode(), f.REQUEST_ID_HEADER.encode(),
})
_FROM_TARGET_DROPPED = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date",
    f.REQUEST_ID_HEADER.encode(),
})
_SSE_OWN_HEADERS = frozenset({b"content-type", b"cache-control", b"x-accel-buffering", b"connection"})
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


class HttpForwarder:
    """The `/mcp` endpoint of the reverse proxy."""

    def __init__(self, service: ProxyService, url: str) -> None:
        self.service = service
        self.url = url
        self.observer = service.observer
        self.counts = service.telemetry.counts
        self.strip_authorization = service.guards.authenticator is not None
        self.client = TargetClient(read_timeout=service.config.request_timeout, max_connections=200)
        #: What each session's client declared at `initialize`, by the target's `Mcp-Session-Id`.
        self.sessions: OrderedDict[str, ClientState] = OrderedDict()
        self.max_sessions = service.config.max_sessions
        #: Whether the last contact with the target got an HTTP answer (below 500).
        self.up = False
        service.telemetry.target_up = lambda: self.up

    async def start(self) -> None:
        await self.client.start()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def check(self) -> dict[str, Any]:
        """The target answers HTTP on its MCP endpoint: any answer below 500 (a stateful server refuses a
        sessionless `ping` with 400, and that refusal shows it is serving)."""
        body = b'{"jsonrpc":"2.0","id":"mcptrace-health","method":"ping"}'
        try:
            response = await self.client.send("POST", self.url, [
                (b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream"),
            ], body, timeout=2.0)
            await response.aclose()
        except httpx2.HTTPError as exc:
            self.up = False
            return {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"[:300]}
        self.up = response.status_code < 500
        if not self.up:
            return {"status": "unhealthy", "error": f"HTTP {response.status_code}"}
        return {"status": "healthy"}

    # -- requests ------------------------------------------------------------------------------------

    def _headers(self, scope: Scope, pendings: list[Pending], caller: Caller) -> list[tuple[bytes, bytes]]:
        headers = [
            (k, v) for k, v in scope["headers"]
            if k not in _HOP_BY_HOP and not (self.strip_authorization and k == b"authorization")
        ]
        headers.append((b"accept-encoding", b"identity"))
        request_id = pendings[0].call.request_id if pendings else _header(scope, f.REQUEST_ID_HEADER.encode())
        if request_id:
            headers.append((f.REQUEST_ID_HEADER.encode(), request_id.encode()))
        if pendings and pendings[0].span is not None:
            carrier = self.service.telemetry.carrier(pendings[0].span)
            headers = [(k, v) for k, v in headers if k not in (b"traceparent", b"tracestate")]
            headers += [(k.encode(), v.encode()) for k, v in carrier.items()]
        if caller.caller_id is not None:
            headers.append((f.CALLER_HEADER.encode(), caller.caller_id.encode("utf-8", "replace")))
        if caller.tenant is not None:
            headers.append((f.TENANT_HEADER.encode(), caller.tenant.encode("utf-8", "replace")))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A session named here is the caller's own: the guards in front answered 404 for any other.
        if scope["method"] == "POST":
            await self._post(scope, receive, send)
        else:
            await self._other(scope, receive, send)

    def _caller(self, scope: Scope) -> Caller:
        state = scope.get("state", {})
        identity = state.get(IDENTITY_STATE_KEY)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"}
        return Caller(
            caller_id=identity[0] if identity else None, tenant=identity[1] if identity else None,
            request_id=_header(scope, f.REQUEST_ID_HEADER.encode()),
            parent=header_context(headers) if headers else None,
        )

    def _client_state(self, session_id: str | None) -> ClientState:
        if session_id is not None:
            state = self.sessions.get(session_id)
            if state is not None:
                self.sessions.move_to_end(session_id)
                return state
        return ClientState(session_id=session_id)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, self.service.config.max_body_bytes) or b""
        try:
            message: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            message = None
        kind = classify(message)
        self.counts.message(TO_TARGET, kind)
        caller = self._caller(scope)
        channel = Channel(self._client_state(_header(scope, b"mcp-session-id")))
        items = message if kind == BATCH else [message]
        pendings: list[Pending] = []
        refusals: list[dict[str, Any]] = []
        forward: list[Any] = []
        modified = False
        for item in items:
            if classify(item) == REQUEST:
                pending = self.observer.open(item, channel, caller, first=not pendings and not refusals)
                refusal = self.observer.admit(pending, channel)
                if refusal is not None:
                    refusals.append(refusal)
                    modified = True
                    continue
                modified = modified or self.observer.modified(pending)
                pendings.append(pending)
            elif isinstance(item, dict) and item.get("method") == "notifications/cancelled":
                self.observer.cancelled(item, channel)
            forward.append(item)
        if refusals:
            mark_response_logged(scope)
        if refusals and not forward:
            await _send_json(send, 200, refusals if kind == BATCH else refusals[0])
            return
        if modified:
            body = orjson.dumps(forward if kind == BATCH else forward[0])
        try:
            await self._exchange(scope, receive, send, body, channel, pendings, refusals, caller)
        finally:
            if channel.pending:  # the client went away, or the answer ended without these
                error = DownstreamError(TARGET_SERVICE, "the answer ended before this request was answered")
                self.observer.fail_all(channel, error)

    async def _exchange(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, channel: Channel, pendings: list[Pending],
        refusals: list[dict[str, Any]], caller: Caller,
    ) -> None:
        try:
            response = await self.client.send("POST", self.url, self._headers(scope, pendings, caller), body)
        except httpx2.HTTPError as exc:
            self.up = isinstance(exc, httpx2.ReadTimeout)  # it took the request: reachable, but too slow
            error = self._transport_error(exc)
            answers = [self.observer.fail(p, channel, error) for p in pendings]
            if pendings:
                mark_response_logged(scope)
            answers += refusals
            await _send_json(send, 502, answers if len(answers) != 1 else answers[0],
                             fallback=error)
            return
        self.up = response.status_code < 500
        try:
            await self._answer(scope, receive, send, response, channel, pendings, refusals)
        finally:
            await response.aclose()

    def _transport_error(self, exc: httpx2.HTTPError) -> DownstreamError:
        if isinstance(exc, httpx2.ReadTimeout):
            return DownstreamError(TARGET_SERVICE, f"no answer within {self.service.config.request_timeout:g} s")
        return DownstreamError(TARGET_SERVICE, f"unreachable ({type(exc).__name__})")

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, response: httpx2.Response, channel: Channel,
        pendings: list[Pending], refusals: list[dict[str, Any]],
    ) -> None:
        status = response.status_code
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _FROM_TARGET_DROPPED]
        session_id = response.headers.get("mcp-session-id")
        if status >= 400 or content_type not in ("application/json", "text/event-stream"):
            if not pendings:
                await _stream_through(send, response, status, headers)
                return
            # The requests' lines say what happened, with the target's own JSON-RPC error when it gave one.
            raw = await _read_bounded(response, 64 * 1024)
            error = (_error_of(raw, status) if raw is not None else None) or DownstreamError(
                TARGET_SERVICE, f"answered HTTP {status}")
            for pending in pendings:
                self.observer.fail(pending, channel, error, target_fault=status >= 500)
            mark_response_logged(scope)
            if raw is None:
                await _stream_through(send, response, status, headers)
            else:
                await _send_bytes(send, status, headers, raw)
            return
        if session_id and channel.client.session_id is None:
            channel.client.session_id = session_id
            self._remember(session_id, channel.client)
        if content_type == "application/json":
            await self._json_answer(send, response, status, headers, channel, refusals)
            return
        # A POST's stream ends with its last answer: relayed event by event as each arrives, without the
        # keep-alive task, disconnect listener and shutdown watch a long-lived stream needs (GET streams).
        kept = [(k, v) for k, v in headers if k.lower() not in _SSE_OWN_HEADERS]
        await send({"type": "http.response.start", "status": status, "headers": [*kept, *_SSE_HEADERS]})
        try:
            async for event in self._events(response, channel, refusals):
                await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
        except OSError:
            return  # the client went away; its open calls are closed by the caller
        await send({"type": "http.response.body", "body": b""})

    async def _json_answer(
        self, send: Send, response: httpx2.Response, status: int, headers: list[tuple[bytes, bytes]],
        channel: Channel, refusals: list[dict[str, Any]],
    ) -> None:
        limit = self.service.config.target_max_message_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                self.counts.rejected("too_large")
                error = DownstreamError(TARGET_SERVICE, f"its answer is over the proxy's limit of {limit} bytes")
                answers = self.observer.fail_all(channel, error)
                await _send_json(send, 502, answers if len(answers) != 1 else answers[0], fallback=error)
                return
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.counts.message(TO_CLIENT, "unknown")
            await _send_bytes(send, status, headers, raw)
            return
        changed = self._observe_answer(message, channel)
        if refusals:
            message = [*(message if isinstance(message, list) else [message]), *refusals]
            changed = True
        await _send_bytes(send, status, headers, orjson.dumps(message) if changed else raw)

    def _observe_answer(self, message: Any, channel: Channel) -> bool:
        kind = classify(message)
        self.counts.message(TO_CLIENT, kind)
        if kind == RESPONSE:
            return self.observer.answer(message, channel)
        if kind == BATCH:
            return any([self.observer.answer(m, channel) for m in message if classify(m) == RESPONSE])
        return False

    async def _events(
        self, response: httpx2.Response, channel: Channel, refusals: list[dict[str, Any]],
    ) -> AsyncIterator[ServerSentEvent]:
        for refusal in refusals:
            yield ServerSentEvent(data=orjson.dumps(refusal).decode())
        source = httpx2.EventSource(response, max_event_size=self.service.config.target_max_message_bytes)
        try:
            async for event in source:
                yield self._relay_event(event, channel)
        except httpx2.HTTPError as exc:  # a cut stream or an event over the limit: the open calls fail
            self.up = isinstance(exc, httpx2.SSEError)
            error = DownstreamError(TARGET_SERVICE, f"its stream ended: {exc}"[:300])
            for answer in self.observer.fail_all(channel, error):
                yield ServerSentEvent(data=orjson.dumps(answer).decode())

    def _relay_event(self, event: httpx2.ServerSentEvent, channel: Channel) -> ServerSentEvent:
        data: str | None = event.data
        if data:
            try:
                message = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.counts.message(TO_CLIENT, "unknown")
            else:
                if self._observe_answer(message, channel):
                    data = orjson.dumps(message).decode()
        else:
            data = None  # a priming event (an id for resumption, no message)
        return ServerSentEvent(data=data, event=None if event.event == "message" else event.event,
                               id=event.id or None, retry=event.retry)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GET (the server's own stream) and DELETE (end of session): passed on, GET streams observed."""
        if scope["method"] == "DELETE":
            session_id = _header(scope, b"mcp-session-id")
            if session_id is not None:
                self.sessions.pop(session_id, None)
        caller = self._caller(scope)
        try:
            response = await self.client.send(scope["method"], self.url, self._headers(scope, [], caller))
        except httpx2.HTTPError as exc:
            self.up = False
            await _send_json(send, 502, None, fallback=self._transport_error(exc))
            return
        self.up = response.status_code < 500
        try:
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _FROM_TARGET_DROPPED]
            if response.status_code < 400 and content_type == "text/event-stream":
                channel = Channel(self._client_state(_header(scope, b"mcp-session-id")))
                sse_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
                               if k.lower() not in _SSE_OWN_HEADERS}
                stream = EventSourceResponse(self._events(response, channel, []), status_code=response.status_code,
                                             headers=sse_headers)
                await stream(scope, receive, send)
            else:
                await _stream_through(send, response, response.status_code, headers)
        finally:
            await response.aclose()

    def _remember(self, session_id: str, state: ClientState) -> None:
        self.sessions[session_id] = state
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)


async def _read_bounded(response: httpx2.Response, limit: int) -> bytes | None:
    """The whole body when it is at most `limit` bytes (then the stream is consumed); else None, unread."""
    length = response.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > limit:
        return None
    return await response.aread()


def _error_of(raw: bytes, status: int) -> ProtocolError | None:
    """The JSON-RPC error in a target's error answer, as a `ProtocolError`."""
    try:
        error = orjson.loads(raw).get("error")
        code, text = error.get("code"), error.get("message")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(code, int) or isinstance(code, bool):
        return None
    return ProtocolError(f"{str(text)[:300]} (HTTP {status})", code=code)


async def _send_bytes(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, message: Any, *, fallback: DownstreamError | None = None) -> None:
    if message is None or message == []:
        assert fallback is not None
        message = {"jsonrpc": "2.0", "id": None, "error": {"code": fallback.code, "message": fallback.message,
                                                           "data": fallback.data}}
    await _send_bytes(send, status, [(b"content-type", b"application/json")], orjson.dumps(message))


async def _stream_through(
    send: Send, response: httpx2.Response, status: int, headers: list[tuple[bytes, bytes]],
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
