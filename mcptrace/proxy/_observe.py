"""Message observation: what each relayed JSON-RPC message means for the logs, spans, metrics and guards.

Transport-independent: the stdio relay, the HTTP reverse proxy and the
stdio-over-HTTP bridge hand every decoded message here and relay what comes
back. Over stdio a client request may first be refused by the rate limits
(`refuse`: one `request_refused` line and nothing else, as under `mcptrace
serve --stdio`; over HTTP the guards in front have judged it already). A
request then opens a `Pending` (its request id, its SERVER span) and may be
refused by the target's breaker before it reaches the target; the target's
answer closes it with the one line `mcptrace serve` writes (`tool_call` or
`response_sent`; one function writes it for both), and gets the request id in
its result's `_meta`. A request the target has not answered after a moment is
written down as `request_received` meanwhile. A message is changed
only where the proxy adds something (the trace context on a request, the id on
a result); everything else is relayed as it came, and what is not understood
is counted.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mcp.types import ErrorData, JSONRPCError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from mcptrace import _fields as f
from mcptrace._errors import INTERNAL_ERROR, DownstreamError, ProtocolError, RateLimitedError
from mcptrace.guards._breaker import HALF_OPEN, BreakerOpenError, CircuitBreaker
from mcptrace.guards._identity import ANONYMOUS
from mcptrace.guards._limits import SCOPE_SUSPENDED
from mcptrace.guards._ratelimit import RateLimiter
from mcptrace.guards._refusals import Refusals
from mcptrace.middleware._clientmeta import read_client_meta
from mcptrace.middleware._ids import new_request_id
from mcptrace.middleware._requestlog import client_fields, request_fields, with_request_id, write_request_line
from mcptrace.proxy._telemetry import ProxyTelemetry
from mcptrace.telemetry._context import CallContext
from mcptrace.telemetry._inflight import InFlight
from mcptrace.telemetry._log import EventLogger, bound

REQUEST, NOTIFICATION, RESPONSE, BATCH, UNKNOWN = "request", "notification", "response", "batch", "unknown"
TO_TARGET, TO_CLIENT = "to_target", "to_client"
#: The kind counted for a message relayed as it came because observing it failed (a bug, never the message's).
UNOBSERVED = "unobserved"
#: The name of the target's circuit breaker (in `/health` and `mcptrace_breaker_state`).
TARGET_SERVICE = "target"


def classify(message: Any) -> str:
    """`request`, `notification`, `response`, `batch` or `unknown` (anything else a peer may send)."""
    if isinstance(message, dict):
        method = message.get("method")
        if isinstance(method, str):
            return REQUEST if "id" in message else NOTIFICATION
        if "id" in message and ("result" in message or "error" in message):
            return RESPONSE
        return UNKNOWN
    return BATCH if isinstance(message, list) else UNKNOWN


def id_key(value: Any) -> Hashable:
    """A JSON-RPC id as a dict key: `1` and `"1"` are different ids."""
    return (type(value).__name__, value if isinstance(value, Hashable) else repr(value))


def error_response(msg_id: Any, error: ProtocolError) -> dict[str, Any]:
    """The JSON-RPC error answer to request `msg_id`, built with the SDK's types."""
    data = getattr(error, "data", None)
    answer = JSONRPCError(jsonrpc="2.0", id=msg_id, error=ErrorData(code=error.code, message=error.message, data=data))
    return answer.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(eq=False)
class ClientState:
    """What a client said about itself (at `initialize` in the handshake era); one per MCP session."""

    session_id: str | None = None
    protocol_version: str | None = None
    client_info: Mapping[str, Any] | None = None

    @property
    def client_params(self) -> ClientState:
        """Read like the SDK session's `client_params` (`read_client_meta` looks there for `client_info`)."""
        return self


@dataclass(frozen=True)
class Caller:
    """Who sent a message, as far as the transport knows."""

    caller_id: str | None = None
    tenant: str | None = None
    #: A request id the transport chose (HTTP: `X-Request-ID`), for the first request of a message.
    request_id: str | None = None
    #: The trace context of an HTTP `traceparent` header.
    parent: otel_context.Context | None = None


@dataclass(eq=False)
class Pending:
    """One client request the target has not answered yet."""

    call: CallContext
    fields: dict[str, Any]
    arguments: Any
    msg_id: Any
    started: float
    deadline: float
    span: Span | None
    protocol_version: str | None
    #: Per-request telemetry reads `method` and `protocol_version` here, as it does on the SDK's context.
    method: str = ""
    done: bool = False


@dataclass(eq=False)
class Channel:
    """Where answers to a set of requests come back: a stdio pipe, a bridge session or one HTTP exchange."""

    client: ClientState = field(default_factory=ClientState)
    pending: dict[Hashable, Pending] = field(default_factory=dict)


class _RequestView:
    """A request as `read_client_meta` reads the SDK's request context."""

    __slots__ = ("meta", "method", "params", "protocol_version", "session")

    def __init__(self, method: str, params: Mapping[str, Any], meta: Mapping[str, Any], client: ClientState) -> None:
        self.method = method
        self.params = params
        self.meta = meta
        self.session = client
        self.protocol_version = client.protocol_version


def _meta_fields(method: str, params: Mapping[str, Any], client: ClientState) -> dict[str, Any]:
    """What the client declared about itself (name, version, protocol, trace context), as log fields."""
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    try:
        return client_fields(read_client_meta(_RequestView(method, params, meta, client)))
    except Exception:
        return {}


class Observer:
    def __init__(
        self, logger: EventLogger, telemetry: ProxyTelemetry, *, limiter: RateLimiter | None,
        refusals: Refusals | None, breaker: CircuitBreaker, transport: str, request_timeout: float,
    ) -> None:
        self.logger = logger
        self.telemetry = telemetry
        self.limiter = limiter
        self.refusals = refusals
        self.breaker = breaker
        self.transport = transport
        self.request_timeout = request_timeout
        self.channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        #: Requests relayed and not answered yet: one still open in a moment gets a `request_received` line.
        self.in_flight = InFlight(logger)

    # -- messages from the client ----------------------------------------------------------------------

    async def refuse(
        self, message: dict[str, Any], channel: Channel, caller: Caller, *, first: bool = True,
    ) -> dict[str, Any] | None:
        """The rate limits, for a request no HTTP layer judged (stdio): None when it may go on, else the error
        answer. A refused request is recorded as a `request_refused` line and nothing else: it is not opened."""
        method = message["method"]
        if self.limiter is None or method in ("initialize", "ping"):
            return None
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        caller_id = caller.caller_id or _meta_fields(method, params, channel.client).get(f.CLIENT_NAME) or ANONYMOUS
        tool = params.get("name") if method == "tools/call" else None
        tool = tool if isinstance(tool, str) else None
        decision = await self.limiter.check(caller_id, tool)
        if decision.allowed:
            return None
        suspended = decision.scope == SCOPE_SUSPENDED
        if self.refusals is not None:
            self.refusals.record(
                f.R_SUSPENDED if suspended else f.R_RATE_LIMITED,
                (caller.request_id if first else None) or new_request_id(), caller_id=caller_id,
                tenant=caller.tenant, tool_name=tool, method=method, retry_after_ms=decision.retry_after_ms,
                limit_scope=decision.scope, error="caller suspended" if suspended else "rate limit exceeded",
            )
        error = RateLimitedError(decision.retry_after_ms, scope=decision.scope or "caller")
        return error_response(message["id"], error)

    def open(self, message: dict[str, Any], channel: Channel, caller: Caller, *, first: bool = True) -> Pending:
        """Start observing a client request: its request id, its SERVER span, its place in flight.

        Nothing is written yet: the request's one line is written when it closes, and a
        `request_received` line only if it is still unanswered after 0.2 s. Adds the span's
        trace context to the request's `_meta` when tracing is on (the message is changed in
        place; the caller re-encodes it).
        """
        method = message["method"]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        meta = params.get("_meta")
        meta = meta if isinstance(meta, dict) else {}
        client = channel.client
        if method == "initialize":
            version = params.get("protocolVersion")
            client.protocol_version = version if isinstance(version, str) else None
            info = params.get("clientInfo")
            client.client_info = info if isinstance(info, dict) else None
        meta_fields = _meta_fields(method, params, client)
        tool = params.get("name") if method == "tools/call" else None
        caller_id = caller.caller_id or meta_fields.get(f.CLIENT_NAME)
        call = CallContext(
            request_id=(caller.request_id if first else None) or new_request_id(), method=method,
            session_id=client.session_id, jsonrpc_id=str(message["id"]),
            tool_name=tool if isinstance(tool, str) else None, caller_id=caller_id, tenant=caller.tenant,
        )
        call.transport = self.transport
        call.protocol_version = meta_fields.get(f.PROTOCOL_VERSION)
        call.client_name, call.client_version = meta_fields.get(f.CLIENT_NAME), meta_fields.get(f.CLIENT_VERSION)
        call.client_parent_span_id, call.baggage = meta_fields.get(f.PARENT_SPAN_ID), meta_fields.get(f.BAGGAGE)
        fields = request_fields(call, self.transport)
        fields.update(meta_fields)
        version = call.protocol_version
        span = self.telemetry.start_span(call, protocol_version=version, params=params, meta=meta,
                                         parent=caller.parent)
        now = time.monotonic()
        pending = Pending(call, fields, params.get("arguments"), message["id"], now, now + self.request_timeout,
                          span, version, method)
        channel.pending[id_key(message["id"])] = pending
        self.channels.add(channel)
        self.in_flight.add(call)  # written down as `request_received` if it is still running in a moment
        if span is not None:
            carrier = self.telemetry.carrier(span)
            if carrier:
                params = message.get("params")
                if not isinstance(params, dict):
                    params = message["params"] = {}
                params["_meta"] = {**meta, **carrier}
        return pending

    def modified(self, pending: Pending) -> bool:
        """Whether `open` changed the request (it then has to be encoded again)."""
        return pending.span is not None

    def admit(self, pending: Pending, channel: Channel) -> dict[str, Any] | None:
        """None when the request may go to the target; else the error answer (the request is closed)."""
        if not self.breaker.admit():
            return self.fail(pending, channel, BreakerOpenError(TARGET_SERVICE, self.breaker.retry_after()),
                             target_fault=None)
        return None

    def cancelled(self, message: dict[str, Any], channel: Channel) -> None:
        """`notifications/cancelled` from the client: the request ends here (no answer will follow)."""
        params = message.get("params")
        if not isinstance(params, dict) or "requestId" not in params:
            return
        pending = channel.pending.pop(id_key(params["requestId"]), None)
        if pending is None:
            return
        reason = params.get("reason")
        text = "cancelled by the client" + (f": {reason}"[:200] if isinstance(reason, str) and reason else "")
        if self.breaker.state == HALF_OPEN:
            self.breaker.record(False)  # release the trial call; the target did not show it works
        self._close(pending, None, text, None, "cancelled")

    # -- messages from the target ------------------------------------------------------------------------

    def answer(self, message: dict[str, Any], channel: Channel) -> bool:
        """Close the request the target answered; True when the answer was changed (the request id added)."""
        pending = channel.pending.pop(id_key(message.get("id")), None)
        if pending is None:
            return False  # an answer to nothing we saw (cancelled, timed out): relayed as it is
        self.breaker.record(True)
        error = message.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            code = code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR
            text = error.get("message") if isinstance(error, dict) else None
            self._close(pending, None, str(text or "error")[:500], code, str(code))
            return False
        result = message.get("result")
        self._close(pending, result, None, None, None)
        if pending.method == "ping" or not result or not isinstance(result, dict):
            return False  # the spec's empty answers (ping, logging/setLevel, ...) stay empty
        message["result"] = with_request_id(result, pending.call.request_id)
        return True

    def fail(
        self, pending: Pending, channel: Channel, error: ProtocolError, *, target_fault: bool | None = True,
    ) -> dict[str, Any]:
        """Close `pending` with `error` and return the error answer for the client.

        `target_fault` says whether the target failed (a crash, a timeout: the breaker counts it),
        or None when a guard answered for it.
        """
        channel.pending.pop(id_key(pending.msg_id), None)
        if target_fault is not None:
            self.breaker.record(not target_fault)
        self._close(pending, None, error.message, error.code, str(error.code))
        return error_response(pending.msg_id, error)

    def fail_all(self, channel: Channel, error: ProtocolError) -> list[dict[str, Any]]:
        """Answer every request of `channel` still waiting with `error` (the target went away)."""
        return [self.fail(p, channel, error) for p in list(channel.pending.values())]

    def expired(self, now: float | None = None) -> list[tuple[Channel, Pending]]:
        """Requests past their deadline, in every channel."""
        now = time.monotonic() if now is None else now
        return [(c, p) for c in list(self.channels) for p in list(c.pending.values()) if p.deadline <= now]

    def timeout_error(self) -> DownstreamError:
        return DownstreamError(TARGET_SERVICE, f"no answer within {self.request_timeout:g} s")

    # -- closing -------------------------------------------------------------------------------------

    @contextmanager
    def _in_request(self, pending: Pending) -> Iterator[None]:
        """Log lines of `pending` carry its fields and its span's ids, whichever task writes them."""
        token = otel_context.attach(trace.set_span_in_context(pending.span)) if pending.span is not None else None
        try:
            with bound(**pending.fields):
                yield
        finally:
            if token is not None:
                otel_context.detach(token)

    def _close(
        self, pending: Pending, result: Any, error: str | None, code: int | None, error_type: str | None,
    ) -> None:
        if pending.done:
            return
        pending.done = True
        duration_s = time.monotonic() - pending.started
        status = f.FAILURE if error else f.SUCCESS
        call = pending.call
        with self._in_request(pending):
            try:
                status, error_type = write_request_line(
                    self.logger, call, pending.arguments, duration_s,
                    result if call.tool_name is not None else None, error, code, error_type,
                )
            except Exception as exc:
                self.logger.emit(f.EV_RESPONSE_SENT, "warning", **{
                    f.STATUS: status, f.ERROR: error, f.ERROR_CODE: code,
                    f.MESSAGE: f"request log incomplete: {type(exc).__name__}",
                })
        self.in_flight.discard(call)
        call.status, call.duration_s, call.error_type = status, duration_s, error_type
        self.telemetry.requests.finish(call)
        self.telemetry.end_span(pending.span, error_type=error_type, error=error)
