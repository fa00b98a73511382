"""SDK middleware: the log lines of every JSON-RPC request, and its request id on the reply.

Runs inside the official SDK's middleware chain (`MCPServer.middleware`), so it
sees every transport: Streamable HTTP in both protocol eras, and stdio. For
each request it binds a `CallContext`, writes `request_received`, `tool_call`
(tools only) and `response_sent`, and puts `mcp_request_id` in the result's
`_meta`. After `instrument()` it also hands each request to its
`RequestTelemetry` (span attributes at the start, metrics at the end). Whatever
happens in logging or telemetry, the request's own outcome is untouched. The
request's lines are written to the OS (`EventLogger.commit`) before its result
goes back to the SDK, which is what lets a crash lose no line of an answered
request, whatever the transport or the stream the answer travels on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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
from mcptrace.telemetry._log import EventLogger, bind, unbind

#: Returns (caller_id, tenant) for a request, or (None, None) when it cannot tell.
Identify = Callable[[ServerRequestContext[Any, Any]], tuple[str | None, str | None]]

__all__ = [
    "IDENTITY_STATE_KEY", "SESSION_ID_STATE_KEY", "RequestLogMiddleware", "client_fields", "client_info",
    "default_identify", "estimate_tokens", "request_fields", "with_request_id", "write_closing_lines",
]

#: scope["state"] key where an auth layer leaves the authenticated (caller_id, tenant).
IDENTITY_STATE_KEY = "mcptrace.identity"
#: scope["state"] key of the session id as the client sees it, where the HTTP layer rewrites the header.
SESSION_ID_STATE_KEY = "mcptrace.session_id"

#: Hooks called as hook(call, status, duration_s) after every tools/call (metrics, spans).
ToolCallHook = Callable[[CallContext, str, float], None]


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


def estimate_tokens(arguments: Any) -> int:
    """Estimated input tokens of a call's arguments: canonical JSON bytes / 4 (no tokenizer download)."""
    return max(1, len(canonical_json(arguments)) // 4) if arguments else 0


class RequestLogMiddleware:
    """Context-tier SDK middleware: request ids, call context and contract log lines."""

    def __init__(
        self,
        logger: EventLogger,
        *,
        identify: Identify = default_identify,
        transport: str = "http",
        tool_hooks: list[ToolCallHook] | None = None,
    ) -> None:
        self.logger = logger
        self.identify = identify
        self.transport = transport
        self.tool_hooks: list[ToolCallHook] = tool_hooks if tool_hooks is not None else []
        #: Span attributes and per-request metrics, when `instrument()` attached them.
        self.telemetry: RequestTelemetry | None = None

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:  # a notification: nothing to answer, nothing to correlate
            return await call_next(ctx)
        _mark_logged(ctx)
        headers = _headers(ctx)
        request_id = (accept_request_id(headers.get(f.REQUEST_ID_HEADER)) if headers else None) or new_request_id()
        session_id = _session_id(ctx, headers)
        params = ctx.params or {}
        tool_name = params.get("name") if ctx.method == "tools/call" else None
        if not isinstance(tool_name, str):
            tool_name = None
        try:
            caller_id, tenant = self.identify(ctx)
        except Exception:
            caller_id, tenant = None, None
        call = CallContext(
            request_id=request_id, method=ctx.method, session_id=session_id, jsonrpc_id=str(ctx.request_id),
            tool_name=tool_name, caller_id=caller_id, tenant=tenant,
        )
        fields = request_fields(call, self.transport)
        fields.update(_client_fields(ctx))
        log_token = bind(**fields)
        call_token = set_call(call)
        telemetry = self.telemetry
        if telemetry is not None:
            telemetry.start(call)
            if tool_name is not None and telemetry.tools.unseen(tool_name):  # a new tool, or one that does not exist
                await telemetry.learn_tools()
        start = time.perf_counter()
        try:
            self.logger.emit(f.EV_REQUEST_RECEIVED)
            try:
                result = await call_next(ctx)
            except MCPError as exc:
                self._finish(ctx, call, params, start, None, exc.error.message, exc.error.code, str(exc.error.code))
                raise
            except ValidationError:
                self._finish(ctx, call, params, start, None, "Invalid request parameters", INVALID_PARAMS,
                             str(INVALID_PARAMS))
                raise
            except Exception as exc:
                self._finish(ctx, call, params, start, None, f"{type(exc).__name__}: {exc}"[:500], INTERNAL_ERROR,
                             type(exc).__qualname__)
                raise
            self._finish(ctx, call, params, start, result, None, None, None)
            if ctx.method == "ping":  # the spec's answer to ping is an empty result; the id rides in X-Request-ID
                return result
            return with_request_id(result, request_id)
        finally:
            reset_call(call_token)
            unbind(log_token)

    def _finish(
        self, ctx: ServerRequestContext[Any, Any], call: CallContext, params: Mapping[str, Any], start: float,
        result: HandlerResult, error: str | None, code: int | None, error_type: str | None,
    ) -> None:
        """Write the closing lines and record the metrics; a failure costs detail, never the request's answer."""
        duration_s = time.perf_counter() - start
        status = f.FAILURE if error else f.SUCCESS
        try:
            status, error_type = self._write_closing_lines(call, params, duration_s, result, error, code, error_type)
        except Exception as exc:
            self.logger.emit(f.EV_RESPONSE_SENT, "warning", **{
                f.STATUS: status, f.ERROR: error, f.ERROR_CODE: code,
                f.MESSAGE: f"request log incomplete: {type(exc).__name__}",
            })
        if self.telemetry is not None:
            self.telemetry.finish(ctx, call, status=status, duration_s=duration_s, error_type=error_type)
        # The answer leaves once this returns: its lines reach the OS first, so a crash cannot lose them.
        self.logger.commit()

    def _write_closing_lines(
        self, call: CallContext, params: Mapping[str, Any], duration_s: float, result: HandlerResult,
        error: str | None, code: int | None, error_type: str | None,
    ) -> tuple[str, str | None]:
        """The `tool_call` and `response_sent` lines; returns the outcome (status, error type) they logged."""
        data = _dump(result) if call.tool_name is not None and result is not None else None  # dumped once
        return write_closing_lines(
            self.logger, call, params.get("arguments"), duration_s, data, error, code, error_type, self.tool_hooks,
        )


def write_closing_lines(
    logger: EventLogger, call: CallContext, arguments: Any, duration_s: float, data: Any,
    error: str | None, code: int | None, error_type: str | None, tool_hooks: Sequence[ToolCallHook] = (),
) -> tuple[str, str | None]:
    """Write a request's `tool_call` (tools only) and `response_sent` lines; returns (status, error type).

    `data` is the result as JSON-ready data (a tool's result is hashed and its `isError` read), or None.
    Shared by the SDK middleware and `mcptrace proxy`, so both write the same lines the same way. Run it
    where the request's fields are bound (`telemetry._log.bind`).
    """
    duration_ms = round(duration_s * 1000, 3)
    if error is None and data is not None and call.tool_name is not None:
        error = _tool_error(data)
        if error is not None:
            error_type = TOOL_ERROR
    status = f.FAILURE if error is not None else f.SUCCESS
    level = "info" if status == f.SUCCESS else "warning"
    if call.tool_name is not None:
        arguments = arguments or {}
        encoded = canonical_json(arguments)  # one encoding for the hash and the token estimate
        call.arguments_hash = bytes_hash(encoded)
        call.result_hash = _result_hash(data) if data is not None else None
        logger.emit(
            f.EV_TOOL_CALL, level, **{
                f.ARGUMENTS_HASH: call.arguments_hash,
                f.RESULT_HASH: call.result_hash,
                f.INPUT_TOKEN_COUNT: max(1, len(encoded) // 4) if arguments else 0,
                f.DURATION_MS: duration_ms, f.STATUS: status, f.ERROR: error, f.ERROR_CODE: code,
                f.DOWNSTREAM_CALLS: call.downstream_calls,
            },
        )
        for hook in tool_hooks:
            try:
                hook(call, status, duration_s)
            except Exception:
                pass
    logger.emit(
        f.EV_RESPONSE_SENT, level, **{f.DURATION_MS: duration_ms, f.STATUS: status, f.ERROR: error,
                                      f.ERROR_CODE: code},
    )
    return status, error_type


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


def _client_fields(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
    try:
        return client_fields(read_client_meta(ctx))
    except Exception:
        return {}


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
