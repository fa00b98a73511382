"""Per-request telemetry: mcptrace's ids on the SDK's span, and the per-request metrics.

`RequestLogMiddleware` calls it (it is not a middleware of its own: one link in
the SDK's chain instead of two, and the request's context, timing and outcome
are worked out once). It runs inside the SDK's span middleware, so the current
span is the request's SERVER span. `start` adds what only mcptrace knows (its
request id, caller, tenant, session; the SDK already names the tool);
`finish` records `mcp.server.operation.duration` for every request and the
checklist's tool metrics for `tools/call`. Labels stay bounded (`_labels`): a
method the protocol does not define, a protocol version nobody published and a
tool the server does not have are all `_unknown`. Nothing here can fail the
request: telemetry errors are swallowed.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from mcptrace import _fields as f
from mcptrace.telemetry._context import CallContext
from mcptrace.telemetry._labels import RegisteredTools, method_label, version_label
from mcptrace.telemetry._metrics import ServerMetrics

_MAX_CACHED_ATTRIBUTE_SETS = 1024

#: `error.type` of a tools/call whose result says `isError` (the SDK's span uses the same value).
TOOL_ERROR = "tool_error"


class RequestTelemetry:
    """What `instrument()` hands the request log: span attributes at the start, metrics at the end."""

    def __init__(
        self, metrics: ServerMetrics | None, *, transport: str = "tcp", tools: RegisteredTools | None = None,
    ) -> None:
        self.metrics = metrics
        self.transport = transport
        #: The `tool` label's values: the server's registered tools (refreshed by the request log).
        self.tools = tools if tools is not None else RegisteredTools(None)
        #: One attribute dict per (method, protocol, tool, error type), reused for every request.
        self._attributes: dict[tuple[str, str | None, str | None, str | None], dict[str, str]] = {}

    def start(self, call: CallContext) -> None:
        """Put the call's ids on the current (SERVER) span when it is recorded."""
        try:
            span = trace.get_current_span()
            if not span.is_recording():
                return
            attributes = {f.ATTR_REQUEST_ID: call.request_id}
            if call.caller_id is not None:
                attributes[f.ATTR_CALLER_ID] = call.caller_id
            if call.tenant is not None:
                attributes[f.ATTR_TENANT] = call.tenant
            if call.session_id is not None:
                attributes[f.ATTR_SESSION_ID] = call.session_id
            span.set_attributes(attributes)
        except Exception:
            pass

    def finish(
        self, ctx: Any, call: CallContext, *, status: str, duration_s: float, error_type: str | None,
    ) -> None:
        """Record the request's duration (and, for a tool, its count and duration by outcome)."""
        metrics = self.metrics
        if metrics is None:
            return
        try:
            tool = self.tools.label(call.tool_name) if call.tool_name is not None else None
            version = ctx.protocol_version
            key = (method_label(call.method or ctx.method), version_label(version) if version else None, tool,
                   error_type)
            attributes = self._attributes.get(key)
            if attributes is None:
                attributes = self._operation_attributes(*key)
                if len(self._attributes) < _MAX_CACHED_ATTRIBUTE_SETS:  # client-chosen names stay bounded
                    self._attributes[key] = attributes
            metrics.record_operation(attributes, duration_s)
            if tool is not None:
                metrics.record_tool_call(tool, status, duration_s)
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
