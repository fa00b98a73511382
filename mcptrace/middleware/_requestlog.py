"""SDK middleware: one record per JSON-RPC request, its one log line, and its request id on the reply.

Runs inside the official SDK's middleware chain (`MCPServer.middleware`), so it
sees every transport: Streamable HTTP in both protocol eras, and stdio. For
each request it fills a `CallContext` (the request's record: ids, caller,
client, trace context, outcome, downstream calls), makes it current, and when
the request is over writes its one line (`tool_call` for a tools/call,
`response_sent` for anything else) and puts `mcp_request_id` in the result's
`_meta`. The record then goes to the request's telemetry: the metrics, and the
span built from it off the request's path (`telemetry/_tracing.py`). A request
still running after a moment is written down as `request_received` meanwhile
(`telemetry/_inflight.py`), so a crash leaves evidence of it.

Whatever happens in logging or telemetry, the request's own outcome is
untouched. The request's line is written to the OS (`EventLogger.commit`)
before its result goes back to the SDK, which is what lets a crash lose no line
of an answered request, whatever the transport or the stream the answer travels on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ValidationError

from mcptrace import _fields as f
from mcptrace._errors import INTERNAL_ERROR, INVALID_PARAMS
from mcptrace._hashing import bytes_hash, canonical_json, json_hash
from mcptrace.middleware._clientmeta import ClientMeta, client_info, read_client_meta
from mcptrace.middleware._ids import accept_request_id, new_request_id
from mcptrace.middleware._requests import mark_response_logged
from mcptrace.middleware._telemetry import TOOL_ERROR, RequestTelemetry
from mcptrace.telemetry._context import CallContext, reset_call, set_call
from mcptrace.telemetry._inflight import InFlight
from mcptrace.telemetry._log import EventLogger
from mcptrace.telemetry._tracing import LiveSpans, RecordedSpans, exception_of, incoming_context

#: Returns (caller_id, tenant) for a request, or (None, None) when it cannot tell.
Identify = Callable[[ServerRequestContext[Any, Any]], tuple[str | None, str | None]]

__all__ = [
    "IDENTITY_STATE_KEY", "SESSION_ID_STATE_KEY", "RequestLogMiddleware", "client_fields", "client_info",
    "default_identify", "request_fields", "with_request_id", "write_request_line",
]

#: scope["state"] key where an auth layer leaves the authenticated (caller_id, tenant).
IDENTITY_STATE_KEY = "mcptrace.identity"
#: scope["state"] key of the session id as the client sees it, where the HTTP layer rewrites the header.
SESSION_ID_STATE_KEY = "mcptrace.session_id"

_TARGETED = ("tools/call", "prompts/get")


def _headers(ctx: ServerRequestContext[Any, Any]) -> Mapping[str, str] | None:
    headers: Mapping[str, str] | None = getattr(ctx.request, "headers", None)
    return headers


def default_identify(ctx: ServerRequestContext[Any, Any]) -> tuple[str | None, str | None]:
    """The authenticated identity when an auth layer left one, else the client's declared name."""
    request = ctx.request
    scope = getattr(request, "scope", None)
    if scope is not None:
        identity = scope.get("state", {}).get(IDENTITY_STATE_KEY)
        if identity is not None:
            return identity[0], identity[1]
    name, _ = client_info(ctx)
    return name, None


def _session_id(ctx: ServerRequestContext[Any, Any], headers: Mapping[str, str] | None) -> str | None:
    """The session id the client sent, as it sent it (the HTTP layer may have rewritten the header)."""
    scope = getattr(ctx.request, "scope", None)
    if scope is not None:
        public = scope.get("state", {}).get(SESSION_ID_STATE_KEY)
        if public is not None:
            return str(public)
    return headers.get("mcp-session-id") if headers else None


def _mark_logged(ctx: ServerRequestContext[Any, Any]) -> None:
    """Tell the HTTP layer this request's answer is logged here: an HTTP error status is not logged twice."""
    scope = getattr(ctx.request, "scope", None)
    if isinstance(scope, dict):
        mark_response_logged(scope)


class RequestLogMiddleware:
    """Context-tier SDK middleware: the request's record, its log line, its span's ids, its metrics."""

    def __init__(
        self,
        logger: EventLogger,
        *,
        identify: Identify = default_identify,
        transport: str = "http",
    ) -> None:
        self.logger = logger
        self.identify = identify
        self.transport = transport
        #: The per-request metrics, when `instrument()` attached them.
        self.telemetry: RequestTelemetry | None = None
        #: How each request's span is made; `instrument()` sets where it goes. Without it requests
        #: still get trace and span ids (on their line, and in the context sent downstream).
        self.spans: RecordedSpans | LiveSpans = RecordedSpans(None)
        #: Requests running now: one still running after `InFlight.after` seconds gets a
        #: `request_received` line.
        self.in_flight = InFlight(logger)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:  # a notification: nothing to answer, nothing to correlate
            return await call_next(ctx)
        _mark_logged(ctx)
        headers = _headers(ctx)
        request_id = (accept_request_id(headers.get(f.REQUEST_ID_HEADER)) if headers else None) or new_request_id()
        method = ctx.method
        params = ctx.params or {}
        target = params.get("name") if method in _TARGETED else None
        if not isinstance(target, str):
            target = None
        try:
            caller_id, tenant = self.identify(ctx)
        except Exception:
            caller_id, tenant = None, None
        call = CallContext(
            request_id, method, _session_id(ctx, headers), str(ctx.request_id),
            target if method == "tools/call" else None, caller_id, tenant,
        )
        if method == "prompts/get":
            call.prompt_name = target
        call.transport = self.transport
        meta = _client_meta(ctx, call)
        span_token = self.spans.start(call, incoming_context(meta, headers))
        # The duration is measured from the span's start, so the span holds everything the request
        # waited for (a first listing of the tools included) and its children end inside it.
        start = time.perf_counter()
        call_token = set_call(call)
        telemetry = self.telemetry
        if telemetry is not None and call.tool_name is not None and telemetry.tools.unseen(call.tool_name):
            await telemetry.learn_tools()  # a new tool, or one that does not exist
        in_flight = self.in_flight
        in_flight.add(call)
        try:
            try:
                result = await call_next(ctx)
            except MCPError as exc:
                self._finish(call, params, start, None, exc.error.message, exc.error.code, str(exc.error.code))
                raise
            except ValidationError:
                self._finish(call, params, start, None, "Invalid request parameters", INVALID_PARAMS,
                             str(INVALID_PARAMS))
                raise
            except Exception as exc:
                call.exception = exception_of(exc)
                self._finish(call, params, start, None, f"{type(exc).__name__}: {exc}"[:500], INTERNAL_ERROR,
                             type(exc).__qualname__)
                raise
            self._finish(call, params, start, result, None, None, None)
            if method == "ping":  # the spec's answer to ping is an empty result; the id rides in X-Request-ID
                return result
            return with_request_id(result, request_id)
        finally:
            in_flight.discard(call)
            reset_call(call_token)
            try:
                self.spans.finish(call, span_token)
            except Exception:
                pass

    def _finish(
        self, call: CallContext, params: Mapping[str, Any], start: float, result: HandlerResult,
        error: str | None, code: int | None, error_type: str | None,
    ) -> None:
        """Complete the record, write its line and record its metrics; a failure costs detail, never the answer."""
        call.duration_s = time.perf_counter() - start
        call.status = f.FAILURE if error else f.SUCCESS
        call.error, call.error_code, call.error_type = error, code, error_type
        try:
            self._complete(call, params, result)
            line = request_line(call)
        except Exception as exc:
            line = request_line(call, fallback=f"request log incomplete: {type(exc).__name__}")
        self.logger.write_record(line)
        if self.telemetry is not None:
            self.telemetry.finish(call)
        # The answer leaves once this returns: its line reaches the OS first, so a crash cannot lose it.
        self.logger.commit()

    @staticmethod
    def _complete(call: CallContext, params: Mapping[str, Any], result: HandlerResult) -> None:
        """A tool call's hashes and token estimate, and the error its result reports (`isError`)."""
        if call.tool_name is None:
            return
        data = _dump(result) if result is not None else None  # dumped once
        if call.error is None and data is not None:
            tool_error = _tool_error(data)
            if tool_error is not None:
                call.status, call.error, call.error_type = f.FAILURE, tool_error, TOOL_ERROR
        arguments = params.get("arguments") or {}
        encoded = canonical_json(arguments)  # one encoding for the hash and the token estimate
        call.arguments_hash = bytes_hash(encoded)
        call.input_token_count = max(1, len(encoded) // 4) if arguments else 0
        call.result_hash = _result_hash(data) if data is not None else None


def request_line(call: CallContext, *, fallback: str | None = None) -> dict[str, Any]:
    """The request's one log line: `tool_call` for a tools/call, `response_sent` for any other request."""
    tool = call.tool_name is not None
    level = "info" if call.status == f.SUCCESS and fallback is None else "warning"
    line: dict[str, Any] = {
        f.TIMESTAMP: None, f.LEVEL: level, f.EVENT: f.EV_TOOL_CALL if tool else f.EV_RESPONSE_SENT,
        f.REQUEST_ID: call.request_id, f.SESSION_ID: call.session_id, f.JSONRPC_ID: call.jsonrpc_id,
        f.METHOD: call.method, f.CALLER_ID: call.caller_id, f.TENANT: call.tenant, f.TRANSPORT: call.transport,
    }
    if tool:
        line[f.TOOL_NAME] = call.tool_name
    _add_client_fields(line, call)
    if tool:
        line[f.ARGUMENTS_HASH] = call.arguments_hash
        line[f.RESULT_HASH] = call.result_hash
        line[f.INPUT_TOKEN_COUNT] = call.input_token_count
    line[f.DURATION_MS] = round(call.duration_s * 1000, 3)
    line[f.STATUS] = call.status
    line[f.ERROR] = call.error
    line[f.ERROR_CODE] = call.error_code
    if tool:
        line[f.DOWNSTREAM_CALLS] = call.downstream_calls
    if fallback is not None:
        line[f.MESSAGE] = fallback
    return line


def write_request_line(
    logger: EventLogger, call: CallContext, arguments: Any, duration_s: float, data: Any,
    error: str | None, code: int | None, error_type: str | None,
) -> tuple[str, str | None]:
    """Complete `call` and write its one line; returns (status, error type).

    `data` is the result as JSON-ready data (a tool's result is hashed and its
    `isError` read), or None. For a server that relays requests rather than
    running them (`mcptrace proxy`), so that it writes the line `mcptrace serve`
    writes; fields bound to the current context and the logger's processors
    (the current span's ids) are added as on any other line.
    """
    call.duration_s = duration_s
    call.status = f.FAILURE if error else f.SUCCESS
    call.error, call.error_code, call.error_type = error, code, error_type
    RequestLogMiddleware._complete(call, {"arguments": arguments}, data)
    logger.write_in_context(request_line(call))
    return call.status, call.error_type


def request_fields(call: CallContext, transport: str) -> dict[str, Any]:
    """The fields every line of one request carries (bind them for its lifetime)."""
    fields = {
        f.REQUEST_ID: call.request_id, f.SESSION_ID: call.session_id, f.JSONRPC_ID: call.jsonrpc_id,
        f.METHOD: call.method, f.CALLER_ID: call.caller_id, f.TENANT: call.tenant, f.TRANSPORT: transport,
    }
    if call.tool_name is not None:
        fields[f.TOOL_NAME] = call.tool_name
    return fields


def client_fields(client: ClientMeta) -> dict[str, Any]:
    """Schema-2 fields of a request's client: protocol era, declared client, W3C trace context."""
    fields: dict[str, Any] = {
        f.PROTOCOL_VERSION: client.protocol_version, f.CLIENT_NAME: client.client_name,
        f.CLIENT_VERSION: client.client_version,
    }
    if client.trace_id is not None:
        fields[f.TRACE_ID] = client.trace_id
        fields[f.PARENT_SPAN_ID] = client.parent_span_id
    if client.baggage is not None:
        fields[f.BAGGAGE] = client.baggage
    return fields


def _add_client_fields(line: dict[str, Any], call: CallContext) -> None:
    """Schema-2 fields: protocol era, declared client, the client's W3C context; then the request's span."""
    line[f.PROTOCOL_VERSION] = call.protocol_version
    line[f.CLIENT_NAME] = call.client_name
    line[f.CLIENT_VERSION] = call.client_version
    if call.client_parent_span_id is not None:
        line[f.PARENT_SPAN_ID] = call.client_parent_span_id
    if call.baggage is not None:
        line[f.BAGGAGE] = call.baggage
    if call.trace_id:
        line[f.TRACE_ID] = format(call.trace_id, "032x")
    if call.span_id:
        line[f.SPAN_ID] = format(call.span_id, "016x")


def _client_meta(ctx: ServerRequestContext[Any, Any], call: CallContext) -> Mapping[str, Any] | None:
    """Fill the record's client fields from the request and its session; returns the request's `_meta`."""
    try:
        client = read_client_meta(ctx)
    except Exception:
        return None
    call.protocol_version = client.protocol_version
    call.client_name = client.client_name
    call.client_version = client.client_version
    call.client_trace_id = client.trace_id
    call.client_parent_span_id = client.parent_span_id
    call.baggage = client.baggage
    meta: Mapping[str, Any] | None = ctx.meta
    return meta


def _dump(result: HandlerResult) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return result


def _result_hash(data: Any) -> str:
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "_meta"}
    return json_hash(data)


def _tool_error(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("isError") is not True:
        return None
    texts = [c.get("text", "") for c in data.get("content", []) if isinstance(c, dict)]
    return ("; ".join(t for t in texts if t) or "tool error")[:500]


def with_request_id(result: HandlerResult, request_id: str) -> HandlerResult:
    """`result` with `_meta["mcptrace/mcp_request_id"]` set (a model or a plain dict); unchanged if it cannot."""
    try:
        if isinstance(result, BaseModel) and "meta" in type(result).model_fields:
            meta = dict(getattr(result, "meta", None) or {})
            meta[f.META_REQUEST_ID] = request_id
            return result.model_copy(update={"meta": meta})
        if isinstance(result, dict):
            meta = dict(result.get("_meta") or {})
            meta[f.META_REQUEST_ID] = request_id
            return {**result, "_meta": meta}
    except Exception:
        pass
    return result
