"""The stdio-over-HTTP bridge: `mcptrace proxy --http -- CMD [ARGS...]`.

A stdio server serves one client. Here every Streamable HTTP session gets its
own process: an `initialize` without `Mcp-Session-Id` starts CMD (through
`StdioTarget`, so it is restarted and its handshake replayed if it dies), and
the session id the bridge mints routes the session's later requests to it.

A POST that carries requests is answered with an SSE stream that ends once
each of its requests is answered; the server's messages go where the SDKs
send them: an answer to the stream of its request, a progress notification to
the stream of the request whose `progressToken` it names, any other message
(a log line, a sampling or elicitation request, a list change) to the newest
open POST stream, else to the session's GET stream, else to a short backlog
the next GET stream receives first. JSON-only and SSE-only clients are served
by the same Accept negotiation as `mcptrace serve`. With authentication on, a
session belongs to the caller that opened it: another token gets 404.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.types import Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import INVALID_REQUEST, DownstreamError
from mcptrace.guards._admission import ADMITTED_STATE_KEY
from mcptrace.middleware._requestlog import IDENTITY_STATE_KEY
from mcptrace.middleware._requests import mark_response_logged, read_body, send_jsonrpc_error
from mcptrace.proxy._observe import (
    BATCH,
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    TARGET_SERVICE,
    TO_CLIENT,
    TO_TARGET,
    Caller,
    Channel,
    ClientState,
    classify,
    id_key,
)
from mcptrace.proxy._service import ProxyService
from mcptrace.proxy._supervise import StdioTarget
from mcptrace.proxy._telemetry import header_context

#: Server messages kept for a session's next GET stream while no stream is open.
BACKLOG = 256
_STREAM_BUFFER = 1024


@dataclass(eq=False)
class _Stream:
    """One open SSE answer (a POST's, or the session's GET stream)."""

    send: MemoryObjectSendStream[bytes]
    receive: MemoryObjectReceiveStream[bytes]
    waiting: set[Hashable] = field(default_factory=set)
    tokens: set[Hashable] = field(default_factory=set)

    def close(self) -> None:
        self.send.close()


def _stream() -> _Stream:
    send, receive = anyio.create_memory_object_stream[bytes](_STREAM_BUFFER)
    return _Stream(send, receive)


class _Session:
    def __init__(self, bridge: Bridge, session_id: str, owner: str | None) -> None:
        self.bridge = bridge
        self.id = session_id
        self.owner = owner
        self.channel = Channel(ClientState(session_id=session_id))
        self.posts: list[_Stream] = []
        self.get: _Stream | None = None
        self.backlog: deque[bytes] = deque(maxlen=BACKLOG)
        self.last_active = time.monotonic()
        config = bridge.service.config
        self.target = StdioTarget(
            bridge.command, logger=bridge.service.logger, counts=bridge.counts, on_message=self.from_target,
            on_exit=self.target_exited, max_message_bytes=config.target_max_message_bytes,
            backoff=config.restart_backoff, backoff_max=config.restart_backoff_max,
        )
        self.target.on_oversized = self.oversized_answer

    async def from_target(self, raw: bytes, message: Any) -> None:
        kind = classify(message)
        self.bridge.counts.message(TO_CLIENT, kind)
        items = message if kind == BATCH else [message]
        for item in items:
            item_kind = classify(item)
            data = raw if kind != BATCH else orjson.dumps(item)
            if item_kind == RESPONSE:
                if self.bridge.observer.answer(item, self.channel):
                    data = orjson.dumps(item)
                await self.deliver_answer(id_key(item.get("id")), data)
            else:
                await self._deliver(data, _progress_token(item))

    async def deliver_answer(self, key: Hashable, data: bytes) -> None:
        for stream in self.posts:
            if key in stream.waiting:
                stream.waiting.discard(key)
                await stream.send.send(data)
                if not stream.waiting:
                    stream.close()
                return
        self.bridge.counts.message(TO_CLIENT, "undeliverable")  # its stream is gone (client left)

    async def _deliver(self, data: bytes, token: Hashable | None) -> None:
        if token is not None:
            for stream in self.posts:
                if token in stream.tokens:
                    await stream.send.send(data)
                    return
        if self.posts:
            await self.posts[-1].send.send(data)
        elif self.get is not None:
            await self.get.send.send(data)
        else:
            if len(self.backlog) == self.backlog.maxlen:
                self.bridge.counts.message(TO_CLIENT, "dropped")
            self.backlog.append(data)

    async def target_exited(self, code: int, delay: float) -> None:
        error = DownstreamError(TARGET_SERVICE, f"the server exited with status {code} before answering; "
                                                f"it is started again in {delay:g} s")
        for answer in self.bridge.observer.fail_all(self.channel, error):
            await self.deliver_answer(id_key(answer.get("id")), orjson.dumps(answer))

    async def oversized_answer(self, msg_id: Any, size: int) -> None:
        pending = self.channel.pending.get(id_key(msg_id))
        if pending is None:
            return
        limit = self.bridge.service.config.target_max_message_bytes
        error = DownstreamError(TARGET_SERVICE, f"its answer of {size} bytes is over the proxy's limit of "
                                                f"{limit} bytes")
        answer = self.bridge.observer.fail(pending, self.channel, error, target_fault=False)
        await self.deliver_answer(id_key(msg_id), orjson.dumps(answer))

    @property
    def idle(self) -> bool:
        return not self.posts and self.get is None and not self.channel.pending


def _progress_token(message: Any) -> Hashable | None:
    if not isinstance(message, dict) or message.get("method") != "notifications/progress":
        return None
    params = message.get("params")
    return id_key(params.get("progressToken")) if isinstance(params, dict) else None


def _requested_token(request: dict[str, Any]) -> Hashable | None:
    """The `progressToken` a request asks its progress notifications to carry."""
    params = request.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict) and "progressToken" in meta:
        return id_key(meta["progressToken"])
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


class Bridge:
    """The `/mcp` endpoint: Streamable HTTP sessions, each a process of `command`."""

    def __init__(self, service: ProxyService, command: list[str]) -> None:
        self.service = service
        self.command = command
        self.observer = service.observer
        self.counts = service.telemetry.counts
        self.sessions: dict[str, _Session] = {}
        self.auth = service.guards.authenticator is not None
        self.last_start_error: str | None = None
        self._group: anyio.abc.TaskGroup | None = None
        service.telemetry.target_up = self._up

    def _up(self) -> bool:
        if self.last_start_error is not None:
            return False
        return not self.sessions or any(s.target.up for s in self.sessions.values())

    async def start(self) -> None:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._reap_idle)

    async def aclose(self) -> None:
        sessions, self.sessions = list(self.sessions.values()), {}
        with anyio.CancelScope(shield=True):
            for session in sessions:
                await self._close(session)
        if self._group is not None:
            self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)

    async def check(self) -> dict[str, Any]:
        """The newest running session's server answers a `ping`; no session yet is healthy (nothing to check)."""
        running = [s for s in self.sessions.values() if s.target.up]
        counts = {"sessions": len(self.sessions), "running": len(running)}
        if self.last_start_error is not None:
            return {"status": "unhealthy", "error": self.last_start_error, **counts}
        if not self.sessions:
            return {"status": "healthy", **counts}
        if not running:
            return {"status": "unhealthy", "error": "no session's server is running", **counts}
        try:
            await running[-1].target.request("ping", timeout=2.0)
        except (TimeoutError, ConnectionError) as exc:
            return {"status": "unhealthy", "error": f"the server did not answer a ping: {exc or 'timeout'}",
                    **counts}
        status = "healthy" if len(running) == len(self.sessions) else "degraded"
        return {"status": status, **counts}

    async def _reap_idle(self) -> None:
        idle_after = self.service.config.session_idle_seconds
        interval = max(0.05, min(1.0, self.observer.request_timeout / 10))
        while True:
            await anyio.sleep(interval)  # a periodic sweep (idle sessions, late answers), not a synchronisation
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.idle and now - session.last_active >= idle_after:
                    self.sessions.pop(session.id, None)
                    await self._close(session)
            for channel, pending in self.observer.expired():
                owner_session = next((s for s in self.sessions.values() if s.channel is channel), None)
                answer = self.observer.fail(pending, channel, self.observer.timeout_error())
                if owner_session is not None:
                    await owner_session.deliver_answer(id_key(pending.msg_id), orjson.dumps(answer))
                    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                              "params": {"requestId": pending.msg_id, "reason": "the proxy's request timeout"}}
                    await owner_session.target.send(orjson.dumps(cancel))

    async def _close(self, session: _Session) -> None:
        for stream in [*session.posts, *([session.get] if session.get else [])]:
            stream.close()
        self.observer.fail_all(session.channel, DownstreamError(TARGET_SERVICE, "the session ended"))
        await session.target.close()

    async def _open_session(self, owner: str | None) -> _Session:
        session = _Session(self, uuid.uuid4().hex, owner)
        try:
            await session.target.start()
        except OSError as exc:
            self.last_start_error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        self.last_start_error = None
        assert self._group is not None
        self._group.start_soon(session.target.run)
        self.sessions[session.id] = session
        return session

    # -- HTTP ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state", {})
        identity = state.get(IDENTITY_STATE_KEY)
        owner = identity[0] if identity and self.auth else None
        session_id = _header(scope, b"mcp-session-id")
        session = self.sessions.get(session_id) if session_id else None
        if session_id is not None and (session is None or session.owner != owner):
            await send_jsonrpc_error(send, 404, INVALID_REQUEST, "Session not found")
            return
        if scope["method"] == "DELETE":
            if session is None:
                await send_jsonrpc_error(send, 400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
                return
            self.sessions.pop(session.id, None)
            await self._close(session)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] == "GET":
            await self._get(scope, receive, send, session)
            return
        await self._post(scope, receive, send, session, identity, owner)

    async def _get(self, scope: Scope, receive: Receive, send: Send, session: _Session | None) -> None:
        if session is None:
            await send_jsonrpc_error(send, 400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
            return
        if session.get is not None:
            await send_jsonrpc_error(send, 409, INVALID_REQUEST, "Conflict: this session already has a GET stream")
            return
        stream = session.get = _stream()
        while session.backlog:
            stream.send.send_nowait(session.backlog.popleft())

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                async for data in stream.receive:
                    yield ServerSentEvent(data=data.decode("utf-8", "replace"))
            finally:
                if session.get is stream:
                    session.get = None

        await EventSourceResponse(events(), headers={"mcp-session-id": session.id})(scope, receive, send)

    async def _post(
        self, scope: Scope, receive: Receive, send: Send, session: _Session | None, identity: Any, owner: str | None,
    ) -> None:
        body = await read_body(receive, self.service.config.max_body_bytes) or b""
        try:
            message: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            await send_jsonrpc_error(send, 400, -32700, "Parse error: the body is not JSON")
            return
        kind = classify(message)
        self.counts.message(TO_TARGET, kind)
        items = message if kind == BATCH else [message]
        if session is None:
            if not (kind == REQUEST and message["method"] == "initialize"):
                await send_jsonrpc_error(send, 400, INVALID_REQUEST, "Bad Request: No valid session ID provided")
                return
            if len(self.sessions) >= self.service.config.max_sessions:
                await send_jsonrpc_error(send, 503, -32000, "Server at its session limit; try again later",
                                         headers=[(b"retry-after", b"5")])
                return
            try:
                session = await self._open_session(owner)
            except OSError as exc:
                await send_jsonrpc_error(send, 502, -32000, f"{TARGET_SERVICE}: could not start: {exc}"[:300])
                return
        session.last_active = time.monotonic()
        caller = Caller(
            caller_id=identity[0] if identity else None, tenant=identity[1] if identity else None,
            admitted=bool(scope.get("state", {}).get(ADMITTED_STATE_KEY)),
            request_id=_header(scope, f.REQUEST_ID_HEADER.encode()),
            parent=header_context({"traceparent": v}) if (v := _header(scope, b"traceparent")) else None,
        )
        stream = _stream()
        refusals: list[bytes] = []
        forward: list[Any] = []
        modified = False
        for item in items:
            item_kind = classify(item)
            if item_kind == REQUEST:
                pending = self.observer.open(item, session.channel, caller, first=not stream.waiting and not refusals)
                if item["method"] == "initialize":
                    session.target.remember_initialize(item.get("params"))
                refusal = await self.observer.admit(pending, session.channel, caller)
                if refusal is not None:
                    refusals.append(orjson.dumps(refusal))
                    modified = True
                    continue
                modified = modified or self.observer.modified(pending)
                stream.waiting.add(id_key(item["id"]))
                token = _requested_token(item)
                if token is not None:
                    stream.tokens.add(token)
            elif item_kind == NOTIFICATION:
                if item["method"] == "notifications/cancelled":
                    self.observer.cancelled(item, session.channel)
                elif item["method"] == "notifications/initialized":
                    session.target.remember_initialized(orjson.dumps(item))
            forward.append(item)
        if refusals:
            mark_response_logged(scope)
        data = body if not modified else orjson.dumps(forward if kind == BATCH else (forward[0] if forward else []))
        if forward and not await session.target.send(data):
            error = DownstreamError(TARGET_SERVICE, "the server is not running; it is being started again")
            for key in list(stream.waiting):
                waiting = session.channel.pending.get(key)
                if waiting is not None:
                    refusals.append(orjson.dumps(self.observer.fail(waiting, session.channel, error)))
            stream.waiting.clear()
        if not stream.waiting and not refusals:
            await send({"type": "http.response.start", "status": 202,
                        "headers": [(b"mcp-session-id", session.id.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        if stream.waiting:
            session.posts.append(stream)
        else:
            stream.close()

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                for refusal in refusals:
                    yield ServerSentEvent(data=refusal.decode())
                async for item in stream.receive:
                    yield ServerSentEvent(data=item.decode("utf-8", "replace"))
            finally:
                if stream in session.posts:
                    session.posts.remove(stream)
                session.last_active = time.monotonic()

        await EventSourceResponse(events(), headers={"mcp-session-id": session.id})(scope, receive, send)
