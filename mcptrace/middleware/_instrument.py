"""`mcptrace.instrument(server)`: request ids, log correlation, spans and metrics for any `MCPServer`.

After the call the server's SDK middleware chain reads

    TraceHeader ─▶ SDK OpenTelemetry (SERVER span) ─▶ RequestLog (+ RequestTelemetry) ─▶ handler

and every `mcptrace.downstream(...)` block inside a tool opens a CLIENT span
and counts its errors. Each Streamable HTTP session's lifetime is recorded as
it ends (`_sessionclock`). The request log does the per-request telemetry itself
(span attributes, metrics) rather than a middleware of its own: one link in the
chain instead of two, on the path of every request. Providers default to the global ones, so an app that
already configured OpenTelemetry needs no arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Tracer, TracerProvider

from mcptrace import _fields as f
from mcptrace._version import __version__
from mcptrace.middleware._requestlog import Identify, RequestLogMiddleware, default_identify
from mcptrace.middleware._sessionclock import time_sessions
from mcptrace.middleware._telemetry import RequestTelemetry
from mcptrace.middleware._traceheader import TraceHeaderMiddleware
from mcptrace.telemetry import _context
from mcptrace.telemetry._labels import RegisteredTools
from mcptrace.telemetry._log import EventLogger, null_logger
from mcptrace.telemetry._metrics import METER_NAME, ServerMetrics
from mcptrace.telemetry._tracing import TRACER_NAME, DownstreamErrors, DownstreamSpans, add_trace_ids

_NETWORK_TRANSPORT = {"http": "tcp", "stdio": "pipe"}


@dataclass
class Instrumentation:
    """What `instrument()` attached; `close()` detaches the process-wide downstream hooks."""

    metrics: ServerMetrics
    tracer: Tracer
    request_log: RequestLogMiddleware
    #: Attributes of `mcp.server.session.duration` (the server's `network.transport`).
    session_attributes: dict[str, str] = field(default_factory=dict)
    _hooks: list[Any] = field(default_factory=list)
    _wrappers: list[Any] = field(default_factory=list)

    def record_session(self, seconds: float) -> None:
        """One session's lifetime (a Streamable HTTP session, or a whole stdio connection)."""
        self.metrics.record_session(seconds, self.session_attributes)

    def close(self) -> None:
        for hook in self._hooks:
            if hook in _context.downstream_hooks:
                _context.downstream_hooks.remove(hook)
        for wrapper in self._wrappers:
            if wrapper in _context.downstream_wrappers:
                _context.downstream_wrappers.remove(wrapper)


def instrument(
    server: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger: EventLogger | None = None,
    identify: Identify = default_identify,
    transport: str = "http",
) -> Instrumentation:
    """Give `server` (an `mcp.server.MCPServer`) mcptrace's request ids, spans, metrics and log correlation.

    The SDK opens its SERVER span through the *global* tracer provider, so a
    `tracer_provider` passed here is also installed globally when none is set
    yet. `logger` receives the JSON log lines; without one, a server that has no
    `RequestLogMiddleware` yet gets one that writes nowhere (ids and metrics
    still work). Call it once per server, before serving.
    """
    if tracer_provider is not None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(tracer_provider)
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME, __version__)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME, __version__)
    server_metrics = ServerMetrics(meter)
    server_metrics.observe_active_sessions(lambda: active_sessions(server))

    chain: list[Any] = server.middleware
    request_log = next((m for m in chain if isinstance(m, RequestLogMiddleware)), None)
    if request_log is None:
        request_log = RequestLogMiddleware(logger or null_logger(), identify=identify, transport=transport)
        chain.append(request_log)
    if add_trace_ids not in request_log.logger.processors:
        request_log.logger.processors.append(add_trace_ids)
    network_transport = _NETWORK_TRANSPORT.get(request_log.transport, request_log.transport)
    request_log.telemetry = RequestTelemetry(
        server_metrics, transport=network_transport, tools=RegisteredTools(_tool_names(server)))
    if not any(isinstance(m, TraceHeaderMiddleware) for m in chain):
        sdk_span = next((i for i, m in enumerate(chain) if type(m).__name__ == "OpenTelemetryMiddleware"), 0)
        chain.insert(sdk_span, TraceHeaderMiddleware())

    wrapper, hook = DownstreamSpans(tracer), DownstreamErrors(server_metrics)
    _context.downstream_wrappers.append(wrapper)
    _context.downstream_hooks.append(hook)
    instrumentation = Instrumentation(server_metrics, tracer, request_log,
                                      {f.ATTR_NETWORK_TRANSPORT: network_transport}, [hook], [wrapper])
    time_sessions(server, instrumentation.record_session)
    return instrumentation


def _tool_names(server: Any) -> Callable[[], Awaitable[list[str]]] | None:
    """The names of `server`'s tools, read through its public `list_tools()` (None when it has none)."""
    list_tools = getattr(server, "list_tools", None)
    if list_tools is None:
        return None

    async def names() -> list[str]:
        return [tool.name for tool in await list_tools()]

    return names


def active_sessions(server: Any) -> int:
    """Open Streamable HTTP sessions of `server` (0 before it serves HTTP, and when stateless)."""
    try:
        manager = server.session_manager
    except Exception:
        return 0
    instances = getattr(manager, "_server_instances", None)
    return len(instances) if instances is not None else 0
