"""`mcptrace.instrument(server)`: request ids, one log line per request, spans and metrics for any `MCPServer`.

After the call the server's SDK middleware chain reads

    RequestLog (record, log line, SERVER span, metrics) ─▶ handler

The SDK's own span middleware is taken out of the chain (the SDK documents
dropping it to opt out): mcptrace makes the SERVER span itself, with the same
semantic-convention attributes and its own, so no request is traced twice.
Every `mcptrace.downstream(...)` block inside a tool is a CLIENT span and
counts its errors; each Streamable HTTP session's lifetime is recorded as it
ends (`_sessionclock`).

Providers: given ones win, then global ones the application set. When neither
exists, `instrument()` sets up what the standard `OTEL_*` variables ask for
(OTLP spans and metrics, see `telemetry/_otlp.py`) and serves `/metrics`; the
request's span is then built from its record off the request's path
(`telemetry/_tracing.py`), which is what keeps full tracing cheap.
"""

from __future__ import annotations

import inspect
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping
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
from mcptrace.telemetry import _context
from mcptrace.telemetry._histograms import HistogramCollector, with_histograms
from mcptrace.telemetry._labels import RegisteredTools
from mcptrace.telemetry._log import EventLogger, LogSink, null_logger
from mcptrace.telemetry._metrics import METER_NAME, ServerMetrics
from mcptrace.telemetry._otlp import Providers, metrics_export_enabled, providers_from_env, sdk_disabled
from mcptrace.telemetry._prometheus import PrometheusEndpoint
from mcptrace.telemetry._spanwire import network_transport
from mcptrace.telemetry._tracing import (
    TRACER_NAME,
    DownstreamErrors,
    DownstreamSpans,
    LiveSpans,
    RecordedSpans,
    add_trace_ids,
)

#: Providers mcptrace set up itself: a later `instrument()` in the same process does not take
#: them for the application's own.
_OWN_PROVIDERS: weakref.WeakSet[Any] = weakref.WeakSet()


@dataclass
class Instrumentation:
    """What `instrument()` attached; `close()` detaches it, `shutdown()` also flushes what it set up."""

    metrics: ServerMetrics
    tracer: Tracer
    request_log: RequestLogMiddleware
    #: Attributes of `mcp.server.session.duration` (the server's `network.transport`).
    session_attributes: dict[str, str] = field(default_factory=dict)
    #: The providers `instrument()` set up from the `OTEL_*` variables (None when it used given ones).
    providers: Providers | None = None
    #: `/metrics` of those providers' metrics (None when it used a given meter provider).
    prometheus: PrometheusEndpoint | None = None
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

    def shutdown(self, timeout: float = 5.0) -> None:
        """Detach, then flush and stop the exporters `instrument()` set up (at most `timeout` seconds)."""
        self.close()
        if self.providers is not None:
            self.providers.shutdown(timeout)


def instrument(
    server: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger: EventLogger | None = None,
    log_file: str | os.PathLike[str] | None = None,
    identify: Identify = default_identify,
    transport: str = "http",
    env: Mapping[str, str] | None = None,
    span_export: str | None = None,
    metrics_path: str | None = "/metrics",
) -> Instrumentation:
    """Give `server` (an `mcp.server.MCPServer`) mcptrace's request ids, log lines, spans and metrics.

    `log_file` (or a `logger`) receives one JSON line per request; without
    either, no lines are written and everything else still works. Spans and
    metrics go to the providers given here, else to the global ones the
    application set; where there are none, to what the `OTEL_*` variables
    (`env`, the process's by default) ask for, exported over OTLP, with the
    metrics also served at `metrics_path` on the server's HTTP app (None: no
    route). `span_export` (`process` or `thread`) wins over
    `MCPTRACE_SPAN_EXPORT`. Call it once per server, before serving.
    """
    environ = os.environ if env is None else env
    own_traces = tracer_provider is None and not _set_by_application(trace.get_tracer_provider())
    own_metrics = meter_provider is None and not _set_by_application(metrics.get_meter_provider())
    providers = prometheus = None
    if own_traces or own_metrics:
        prometheus = PrometheusEndpoint() if own_metrics else None
        reader = prometheus.reader if prometheus is not None else None
        providers = providers_from_env(
            environ, extra_readers=[reader] if reader is not None else [], span_export=span_export,
            export_from=(reader, reader.snapshot) if reader is not None else None,
            traces=own_traces, metrics=own_metrics,
        )
        for provider in (providers.tracer_provider, providers.meter_provider):
            if provider is not None:
                _OWN_PROVIDERS.add(provider)
        if own_metrics:
            meter_provider = providers.meter_provider
        if own_traces and providers.tracer_provider is not None:
            tracer_provider = providers.tracer_provider
    if tracer_provider is not None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # Spans made through the global API (a tool's own, httpx's) go to the same provider.
        trace.set_tracer_provider(tracer_provider)
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME, __version__)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER_NAME, __version__)
    # The per-request histograms are aggregated by mcptrace when every reader of them is its own.
    fast = (own_metrics and providers is not None and prometheus is not None and not sdk_disabled(environ)
            and (providers.metric_export is not None or not metrics_export_enabled(environ)))
    server_metrics = ServerMetrics(meter, fast_histograms=fast)
    if fast and prometheus is not None and providers is not None:
        histograms = server_metrics.histograms
        prometheus.registry.register(HistogramCollector(histograms))
        if providers.metric_export is not None:
            providers.metric_export.transform = lambda data: with_histograms(data, histograms, METER_NAME)
    server_metrics.observe_active_sessions(lambda: _open_sessions(server))

    if logger is None and log_file is not None:
        logger = EventLogger(LogSink(log_file))
    chain: list[Any] = server.middleware
    chain[:] = [m for m in chain if not _is_sdk_span_middleware(m)]
    request_log = next((m for m in chain if isinstance(m, RequestLogMiddleware)), None)
    if request_log is None:
        request_log = RequestLogMiddleware(logger or null_logger(), identify=identify, transport=transport)
        chain.append(request_log)
    if add_trace_ids not in request_log.logger.processors:  # the other lines: a dependency's, a tool's own
        request_log.logger.processors.append(add_trace_ids)
    if own_traces:
        feed = providers.span_feed if providers is not None else None
        request_log.spans = RecordedSpans(feed, providers.sampler if providers is not None else None)
    else:
        request_log.spans = LiveSpans(tracer)
    transport_attribute = network_transport(request_log.transport) or request_log.transport
    request_log.telemetry = RequestTelemetry(server_metrics, transport=transport_attribute,
                                             tools=RegisteredTools(_tool_lister(server)))
    server_metrics.observe_dropped(request_log.logger.sink.dropped)  # lines the log file could not take
    if providers is not None:
        server_metrics.observe_dropped(providers.drops.snapshot)
        if prometheus is not None and metrics_path is not None and hasattr(server, "custom_route"):
            server.custom_route(metrics_path, methods=["GET"])(prometheus.endpoint)

    wrapper, hook = DownstreamSpans(tracer), DownstreamErrors(server_metrics)
    _context.downstream_wrappers.append(wrapper)
    _context.downstream_hooks.append(hook)
    instrumentation = Instrumentation(server_metrics, tracer, request_log,
                                      {f.ATTR_NETWORK_TRANSPORT: transport_attribute}, providers, prometheus,
                                      [hook], [wrapper])
    time_sessions(server, instrumentation.record_session)
    return instrumentation


def _set_by_application(provider: Any) -> bool:
    """Whether a global provider is one the application set (not the API's proxy, not one of ours)."""
    if isinstance(provider, trace.ProxyTracerProvider | metrics.NoOpMeterProvider):
        return False
    if type(provider).__name__ == "_ProxyMeterProvider":  # the metrics API's proxy is not exported
        return False
    return provider not in _OWN_PROVIDERS


def _is_sdk_span_middleware(middleware: Any) -> bool:
    """The SDK's `OpenTelemetryMiddleware`, which opens a SERVER span per message (mcptrace makes its own)."""
    kind = type(middleware)
    return kind.__name__ == "OpenTelemetryMiddleware" and kind.__module__.startswith("mcp.")


def _tool_lister(server: Any) -> Callable[[], Awaitable[list[str]]] | None:
    """The names of `server`'s tools through its public `list_tools()` (an `MCPServer`'s), if it has one."""
    list_tools = getattr(server, "list_tools", None)
    if not inspect.iscoroutinefunction(list_tools):
        return None

    async def names() -> list[str]:
        return [tool.name for tool in await list_tools()]

    return names


def _open_sessions(server: Any) -> int:
    """Open Streamable HTTP sessions of `server` (0 before it serves HTTP, and when stateless)."""
    try:
        manager = server.session_manager
    except Exception:
        return 0
    instances = getattr(manager, "_server_instances", None)
    return len(instances) if instances is not None else 0
