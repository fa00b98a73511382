"""The proxy's telemetry: the same providers, metrics and span attributes as `mcptrace serve`, plus its own gauges.

`mcptrace serve` builds its SERVER span from the request's record once the
request has ended, off the request's path. A proxy must hand the span's context
on to the target while the request runs, so it opens the span through its tracer
as the request starts (named and attributed by the MCP semantic conventions:
`mcp.method.name`, `jsonrpc.request.id`, `gen_ai.tool.name`, ...), continuing the
client's trace (`_meta.traceparent`, else the HTTP `traceparent` header), and
ends it with the target's answer. Per-request metrics go through the same
`RequestTelemetry` the SDK middleware uses. Gauges describing the target are read at collection time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer

from mcptrace import _fields as f
from mcptrace._version import __version__
from mcptrace.middleware._telemetry import RequestTelemetry
from mcptrace.telemetry._context import CallContext
from mcptrace.telemetry._histograms import HistogramCollector, with_histograms
from mcptrace.telemetry._log import EventLogger
from mcptrace.telemetry._metrics import METER_NAME, GuardCounters, ServerMetrics, register_guard_metrics
from mcptrace.telemetry._otlp import Providers, metrics_export_enabled, sdk_disabled
from mcptrace.telemetry._prometheus import PrometheusEndpoint
from mcptrace.telemetry._setup import export_providers
from mcptrace.telemetry._tracing import TRACER_NAME, add_trace_ids

_NETWORK_TRANSPORT = {"http": "tcp", "stdio": "pipe"}


class Counts:
    """Plain counters the proxy bumps on its hot path; metrics read them at collection time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: dict[tuple[str, str], int] = {}
        self.restarts = 0
        self.output_rejected: dict[str, int] = {}

    def message(self, direction: str, kind: str) -> None:
        key = (direction, kind)
        with self.lock:
            self.messages[key] = self.messages.get(key, 0) + 1

    def rejected(self, reason: str) -> None:
        with self.lock:
            self.output_rejected[reason] = self.output_rejected.get(reason, 0) + 1


@dataclass
class ProxyTelemetry:
    providers: Providers | None
    prometheus: PrometheusEndpoint | None
    metrics: ServerMetrics
    tracer: Tracer
    requests: RequestTelemetry
    target: str
    counts: Counts = field(default_factory=Counts)
    #: Whether the target answers now (read by the `mcptrace_proxy_target_up` gauge and /health).
    target_up: Callable[[], bool] = lambda: False

    def health(self) -> dict[str, Any]:
        if self.providers is None:
            return {"traces": False, "logs": False}
        drops = self.providers.drops
        return {
            "traces": self.providers.tracer_provider is not None,
            "logs": self.providers.logger_provider is not None,
            "spans_dropped": drops.total("traces"),
            "logs_dropped": drops.total("logs"),
        }

    def register_guards(self, guards: GuardCounters) -> None:
        register_guard_metrics(self.metrics.meter, guards)

    def shutdown(self, timeout: float = 5.0) -> None:
        if self.providers is not None:
            self.providers.shutdown(timeout)

    # -- spans ---------------------------------------------------------------------------------------

    def start_span(
        self, call: CallContext, *, protocol_version: str | None, params: Mapping[str, Any] | None,
        meta: Mapping[str, Any] | None, parent: otel_context.Context | None,
    ) -> Span | None:
        """The request's SERVER span, a child of the client's trace; None when tracing is off."""
        try:
            context = _meta_context(meta) or parent
            method = call.method or ""
            attributes: dict[str, Any] = {
                f.ATTR_METHOD: method, f.ATTR_REQUEST_ID: call.request_id,
                f.ATTR_NETWORK_TRANSPORT: self.requests.transport,
            }
            if call.jsonrpc_id is not None:
                attributes[f.ATTR_JSONRPC_ID] = call.jsonrpc_id
            if protocol_version:
                attributes[f.ATTR_PROTOCOL_VERSION] = protocol_version
            if call.session_id is not None:
                attributes[f.ATTR_SESSION_ID] = call.session_id
            if call.caller_id is not None:
                attributes[f.ATTR_CALLER_ID] = call.caller_id
            if call.tenant is not None:
                attributes[f.ATTR_TENANT] = call.tenant
            name = params.get("name") if params else None
            target = name if isinstance(name, str) and method in ("tools/call", "prompts/get") else None
            if method == "tools/call":
                attributes[f.ATTR_GEN_AI_OPERATION] = "execute_tool"
                if target is not None:
                    attributes[f.ATTR_TOOL_NAME] = target
            elif target is not None:
                attributes["gen_ai.prompt.name"] = target
            span = self.tracer.start_span(
                f"{method} {target}" if target else method, context=context, kind=SpanKind.SERVER,
                attributes=attributes,
            )
            return span if span.is_recording() else None
        except Exception:
            return None

    @staticmethod
    def end_span(span: Span | None, *, error_type: str | None, error: str | None) -> None:
        if span is None:
            return
        try:
            if error_type is not None:
                span.set_attribute(f.ATTR_ERROR_TYPE, error_type)
                if error_type.lstrip("-").isdigit():
                    span.set_attribute("rpc.response.status_code", error_type)
                span.set_status(StatusCode.ERROR, error)
            span.end()
        except Exception:
            pass

    @staticmethod
    def carrier(span: Span | None) -> dict[str, str]:
        """W3C `traceparent` (and `tracestate`) of `span`, to hand on to the target."""
        carrier: dict[str, str] = {}
        if span is not None:
            try:
                inject(carrier, context=trace.set_span_in_context(span))
            except Exception:
                pass
        return carrier


def _meta_context(meta: Mapping[str, Any] | None) -> otel_context.Context | None:
    value = meta.get("traceparent") if meta else None
    if not isinstance(value, str):
        return None
    carrier = {"traceparent": value}
    state = meta.get("tracestate") if meta else None
    if isinstance(state, str):
        carrier["tracestate"] = state
    context = extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def header_context(headers: Mapping[str, str]) -> otel_context.Context | None:
    """The trace context of an HTTP `traceparent` header, when valid."""
    if "traceparent" not in headers:
        return None
    try:
        context = extract(headers)
    except Exception:
        return None
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def build_telemetry(
    logger: EventLogger, *, transport: str, target: str, span_export: str | None = None, export: bool = True,
) -> ProxyTelemetry:
    """Providers from `OTEL_*` (as `mcptrace serve`), `/metrics`, and the proxy's own instruments.

    With `export=False` (tests of the relay alone) the global providers are used and nothing is exported.
    """
    providers: Providers | None = None
    prometheus: PrometheusEndpoint | None = None
    if export:
        providers, prometheus = export_providers(logger, span_export=span_export)
        tracer_provider = providers.tracer_provider
        if tracer_provider is not None and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(tracer_provider)
        tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME, __version__)
        assert providers.meter_provider is not None  # export_providers sets up metrics
        meter = providers.meter_provider.get_meter(METER_NAME, __version__)
    else:
        from opentelemetry import metrics

        tracer = trace.get_tracer(TRACER_NAME, __version__)
        meter = metrics.get_meter(METER_NAME, __version__)
    if add_trace_ids not in logger.processors:
        logger.processors.append(add_trace_ids)
    # The per-request histograms are aggregated in plain Python, as `instrument()` does, when every
    # reader of them is the proxy's own (`/metrics` and its metric export): no SDK measurement per call.
    fast = (providers is not None and prometheus is not None and not sdk_disabled(os.environ)
            and (providers.metric_export is not None or not metrics_export_enabled(os.environ)))
    server_metrics = ServerMetrics(meter, fast_histograms=fast)
    if fast and providers is not None and prometheus is not None:
        histograms = server_metrics.histograms
        prometheus.registry.register(HistogramCollector(histograms))
        if providers.metric_export is not None:
            providers.metric_export.transform = lambda data: with_histograms(data, histograms, METER_NAME)
    if providers is not None:
        server_metrics.observe_dropped(providers.drops.snapshot)
    requests = RequestTelemetry(server_metrics, transport=_NETWORK_TRANSPORT.get(transport, transport))
    telemetry = ProxyTelemetry(providers, prometheus, server_metrics, tracer, requests, target)
    _register_proxy_metrics(telemetry)
    return telemetry


def _register_proxy_metrics(telemetry: ProxyTelemetry) -> None:
    meter = telemetry.metrics.meter
    counts = telemetry.counts
    labels = {f.L_TARGET: telemetry.target}

    def up(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(1 if telemetry.target_up() else 0, labels)]
        except Exception:
            return []

    def messages(options: CallbackOptions) -> Iterable[Observation]:
        with counts.lock:
            items = list(counts.messages.items())
        return [Observation(n, {f.L_DIRECTION: d, f.L_KIND: k}) for (d, k), n in items]

    def restarts(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(counts.restarts, labels)]

    def rejected(options: CallbackOptions) -> Iterable[Observation]:
        with counts.lock:
            items = list(counts.output_rejected.items())
        return [Observation(n, {f.L_REASON: reason}) for reason, n in items]

    meter.create_observable_gauge(f.M_PROXY_TARGET_UP, [up],
                                  description="1 while the proxied MCP server answers, 0 while it does not")
    meter.create_observable_counter(f.M_PROXY_MESSAGES, [messages], unit="{message}",
                                    description="JSON-RPC messages relayed, by direction and kind")
    meter.create_observable_counter(f.M_PROXY_TARGET_RESTARTS, [restarts], unit="{restart}",
                                    description="restarts of the proxied stdio server after it ended")
    meter.create_observable_counter(f.M_PROXY_OUTPUT_REJECTED, [rejected], unit="{line}",
                                    description="output of the proxied server that is not protocol, by reason")
