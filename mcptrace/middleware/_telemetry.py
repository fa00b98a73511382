"""SDK middleware: mcptrace's ids on the SDK's span, and the semantic-convention duration metric.

Sits inside `RequestLogMiddleware` (which binds the call context) and inside
the SDK's span middleware, so the current span is the request's SERVER span.
It adds what only mcptrace knows (its request id, caller, tenant, session) and
records `mcp.server.operation.duration` for every request. Nothing here can
fail the request: telemetry errors are swallowed.
"""

from __future__ import annotations

import time
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from opentelemetry import trace
from pydantic import ValidationError

from mcptrace import _fields as f
from mcptrace._errors import INVALID_PARAMS
from mcptrace.telemetry._context import current_call
from mcptrace.telemetry._metrics import ServerMetrics

_MAX_CACHED_ATTRIBUTE_SETS = 1024


class TelemetryMiddleware:
    """Context-tier SDK middleware; place it after `RequestLogMiddleware`."""

    def __init__(self, metrics: ServerMetrics | None, *, transport: str = "tcp") -> None:
        self.metrics = metrics
        self.transport = transport
        #: One attribute dict per (method, protocol, tool, error type), reused for every request.
        self._attributes: dict[tuple[str, str | None, str | None, str | None], dict[str, str]] = {}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:
            return await call_next(ctx)
        span = trace.get_current_span()
        if span.is_recording():
            _enrich(span)
        start = time.perf_counter()
        error_type: str | None = None
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            error_type = str(exc.error.code)
            raise
        except ValidationError:
            error_type = str(INVALID_PARAMS)
            raise
        except Exception as exc:
            error_type = type(exc).__qualname__
            raise
        else:
            if ctx.method == "tools/call" and _is_tool_error(result):
                error_type = "tool_error"
            return result
        finally:
            if self.metrics is not None:
                self._record(ctx, time.perf_counter() - start, error_type)

    def _record(self, ctx: ServerRequestContext[Any, Any], duration_s: float, error_type: str | None) -> None:
        try:
            call = current_call()
            tool = call.tool_name if call is not None else None
            key = (ctx.method, ctx.protocol_version, tool, error_type)
            attributes = self._attributes.get(key)
            if attributes is None:
                attributes = self._operation_attributes(*key)
                if len(self._attributes) < _MAX_CACHED_ATTRIBUTE_SETS:  # client-chosen names stay bounded
                    self._attributes[key] = attributes
            assert self.metrics is not None
            self.metrics.record_operation(attributes, duration_s)
        except Exception:
            pass

    def _operation_attributes(
        self, method: str, protocol_version: str | None, tool: str | None, error_type: str | None,
    ) -> dict[str, str]:
        attributes = {f.ATTR_METHOD: method, f.ATTR_NETWORK_TRANSPORT: self.transport}
        if protocol_version:
            attributes[f.ATTR_PROTOCOL_VERSION] = protocol_version
        if tool is not None:
            attributes[f.ATTR_TOOL_NAME] = tool
            attributes[f.ATTR_GEN_AI_OPERATION] = "execute_tool"
        if error_type is not None:
            attributes[f.ATTR_ERROR_TYPE] = error_type
        return attributes


def _enrich(span: trace.Span) -> None:
    call = current_call()
    if call is None:
        return
    try:
        attributes = {f.ATTR_REQUEST_ID: call.request_id}
        if call.caller_id is not None:
            attributes[f.ATTR_CALLER_ID] = call.caller_id
        if call.tenant is not None:
            attributes[f.ATTR_TENANT] = call.tenant
        if call.session_id is not None:
            attributes[f.ATTR_SESSION_ID] = call.session_id
        if call.tool_name is not None:
            attributes[f.ATTR_TOOL_NAME] = call.tool_name
        span.set_attributes(attributes)
    except Exception:
        pass


def _is_tool_error(result: Any) -> bool:
    if isinstance(result, dict):
        return result.get("isError") is True
    return getattr(result, "is_error", False) is True
