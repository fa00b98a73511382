"""Per-request metrics, recorded from the request's record.

`RequestLogMiddleware` calls it (it is not a middleware of its own: one link in
the SDK's chain instead of two, and the request's context, timing and outcome
are worked out once, in its record). `finish` records
`mcp.server.operation.duration` for every request and the
checklist's tool metrics for `tools/call` (with the caller's count and the loop
watch). Labels stay bounded: a tool that is not registered, a method the
server does not have, a caller past the first `MAX_CALLER_SERIES`, a protocol
version the SDK does not know are all `_unknown`. Nothing here can fail the request: telemetry errors are swallowed.
"""

from __future__ import annotations

from mcp_types.version import KNOWN_PROTOCOL_VERSIONS

from mcptrace import _fields as f
from mcptrace._errors import METHOD_NOT_FOUND
from mcptrace.telemetry._context import CallContext
from mcptrace.telemetry._labels import FirstSeen, RegisteredTools
from mcptrace.telemetry._metrics import ServerMetrics

_MAX_CACHED_ATTRIBUTE_SETS = 1024
#: Callers with a series of their own in `mcptrace_caller_tool_calls_total`; the rest are `_unknown`.
MAX_CALLER_SERIES = 100
_PROTOCOL_VERSIONS = frozenset(KNOWN_PROTOCOL_VERSIONS)
_METHOD_NOT_FOUND = str(METHOD_NOT_FOUND)  # `error.type` of a request naming no method the server has

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
        self.callers = FirstSeen(MAX_CALLER_SERIES)
        #: One attribute dict per (method, protocol, tool, error type), reused for every request.
        self._attributes: dict[tuple[str, str | None, str | None, str | None], dict[str, str]] = {}

    async def learn_tools(self) -> None:
        """Read the server's tool names again (at most once a second) and start their series at 0.

        Called for every call naming a tool not known yet: a client calling made-up names costs one
        listing and one pass over the series a second, not one per call."""
        before = self.tools.names
        await self.tools.refresh()
        if self.metrics is not None and self.tools.names is not before:
            try:
                self.metrics.start_tool_series(self.tools.names)
            except Exception:
                pass

    def finish(self, call: CallContext) -> None:
        """Record the request's duration (and, for a tool, its count and duration by outcome)."""
        metrics = self.metrics
        if metrics is None:
            return
        try:
            status, duration_s, error_type = call.status or f.SUCCESS, call.duration_s, call.error_type
            tool = self.tools.label(call.tool_name) if call.tool_name is not None else None
            method = call.method or f.UNKNOWN_LABEL
            if error_type == _METHOD_NOT_FOUND:  # a method the server does not have: the client named it
                method = f.UNKNOWN_LABEL
            key = (method, call.protocol_version, tool, error_type)
            attributes = self._attributes.get(key)
            if attributes is None:
                attributes = self._operation_attributes(*key)
                if len(self._attributes) < _MAX_CACHED_ATTRIBUTE_SETS:  # client-chosen names stay bounded
                    self._attributes[key] = attributes
            metrics.record_operation(attributes, duration_s, key)
            if tool is not None:
                repeat = None
                if status == f.SUCCESS and call.result_hash is not None:
                    repeat = (call.caller_id, tool, call.arguments_hash, call.result_hash)
                metrics.record_tool_call(tool, status, duration_s, caller=self.callers(call.caller_id), repeat=repeat)
        except Exception:
            pass

    def _operation_attributes(
        self, method: str, protocol_version: str | None, tool: str | None, error_type: str | None,
    ) -> dict[str, str]:
        attributes = {f.ATTR_METHOD: method, f.ATTR_NETWORK_TRANSPORT: self.transport}
        if protocol_version:
            known = protocol_version in _PROTOCOL_VERSIONS
            attributes[f.ATTR_PROTOCOL_VERSION] = protocol_version if known else f.UNKNOWN_LABEL
        if tool is not None:
            attributes[f.ATTR_TOOL_NAME] = tool
            attributes[f.ATTR_GEN_AI_OPERATION] = "execute_tool"
        if error_type is not None:
            attributes[f.ATTR_ERROR_TYPE] = error_type
        return attributes
