"""Tracer, meter and logger providers from the standard `OTEL_*` environment variables.

What turns each signal on (the OpenTelemetry SDK's own variables, nothing new):

- traces: `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, or
  `OTEL_TRACES_EXPORTER=otlp`; `OTEL_TRACES_EXPORTER=none` turns them off.
- metrics over OTLP: an endpoint is set (generic or `..._METRICS_ENDPOINT`) and
  `OTEL_METRICS_EXPORTER` is not `none`, every `OTEL_METRIC_EXPORT_INTERVAL` ms (60 s default).
  The Prometheus reader is always on; the export sends its collections rather than
  aggregating every measurement a second time, unless the exporter asks for delta
  temporality or another histogram aggregation (then it gets a reader of its own).
- logs over OTLP: opt-in, `OTEL_LOGS_EXPORTER=otlp`.
- `OTEL_EXPORTER_OTLP_PROTOCOL` (or the per-signal `..._PROTOCOL`): `http/protobuf` (default)
  or `grpc`. `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` name the resource;
  `OTEL_BSP_*` size the span queue and the export's batches (`_spanfeed`, `_spanchild`);
  `OTEL_SDK_DISABLED=true` turns everything off (the
  SDK's meter provider then hands out no-op meters, so `/metrics` is empty too).
- `OTEL_METRICS_EXEMPLAR_FILTER`: exemplars are off unless this asks for them
  (`trace_based`, `always_on`). With them on, every measurement inside a sampled
  span is offered to an exemplar reservoir of every reader, which roughly doubles
  what a metric costs on the request path.

Exporters run on background threads behind bounded queues: a receiver that is
down or slow costs dropped items, counted in `DropCounter`, never a request.
Request records and other finished spans go through one bounded queue
(`_spanfeed`); their spans are built, encoded and sent by a child process
(`_spanprocess`, `_spanchild`) unless `MCPTRACE_SPAN_EXPORT=thread` keeps that on
the queue's thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Sampler

from mcptrace._errors import ConfigError
from mcptrace.telemetry._drops import DropCounter
from mcptrace.telemetry._metricexport import PeriodicMetricExport, Snapshot, exports_what_prometheus_keeps
from mcptrace.telemetry._resource import make_resource
from mcptrace.telemetry._spanfeed import FeedSpanProcessor, SpanFeed, ThreadExport, feed_settings
from mcptrace.telemetry._spanprocess import ProcessSpanExporter

PROTOCOLS = ("http/protobuf", "grpc")
EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "always_off": AlwaysOffExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "trace_based": TraceBasedExemplarFilter,
}


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _protocol(env: Mapping[str, str], signal: str) -> str:
    value = _env(env, f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or _env(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
    value = value or "http/protobuf"
    if value not in PROTOCOLS:
        raise ConfigError(f"OTLP protocol {value!r} is not supported; use one of {', '.join(PROTOCOLS)}")
    return value


def _endpoint_set(env: Mapping[str, str], signal: str) -> bool:
    generic = _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(generic or _env(env, f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def sdk_disabled(env: Mapping[str, str]) -> bool:
    """`OTEL_SDK_DISABLED=true`: nothing is recorded or exported."""
    return _env(env, "OTEL_SDK_DISABLED").lower() == "true"


def traces_enabled(env: Mapping[str, str]) -> bool:
    if _env(env, "OTEL_SDK_DISABLED").lower() == "true":
        return False
    exporter = _env(env, "OTEL_TRACES_EXPORTER").lower()
    if exporter == "none":
        return False
    return exporter == "otlp" or _endpoint_set(env, "TRACES")


def metrics_export_enabled(env: Mapping[str, str]) -> bool:
    if _env(env, "OTEL_SDK_DISABLED").lower() == "true":
        return False
    exporter = _env(env, "OTEL_METRICS_EXPORTER").lower()
    if exporter == "none":
        return False
    return exporter == "otlp" or _endpoint_set(env, "METRICS")


def logs_export_enabled(env: Mapping[str, str]) -> bool:
    if _env(env, "OTEL_SDK_DISABLED").lower() == "true":
        return False
    return _env(env, "OTEL_LOGS_EXPORTER").lower() == "otlp"


def exemplar_filter(env: Mapping[str, str]) -> ExemplarFilter:
    """`OTEL_METRICS_EXEMPLAR_FILTER` when set; off otherwise, to keep metrics cheap per request."""
    name = _env(env, "OTEL_METRICS_EXEMPLAR_FILTER").lower() or "always_off"
    if name not in EXEMPLAR_FILTERS:
        raise ConfigError(
            f"OTEL_METRICS_EXEMPLAR_FILTER={name!r} is not supported; "
            f"use one of {', '.join(EXEMPLAR_FILTERS)}")
    return EXEMPLAR_FILTERS[name]()


#: Where spans are built, encoded and sent (`MCPTRACE_SPAN_EXPORT`): a child process, or the queue's thread.
SPAN_EXPORT_MODES = ("process", "thread")
DEFAULT_SPAN_EXPORT = "process"


def span_export_mode(env: Mapping[str, str], given: str | None = None) -> str:
    """`given`, else `MCPTRACE_SPAN_EXPORT`, else the default; `ConfigError` for anything else."""
    value = (given or _env(env, "MCPTRACE_SPAN_EXPORT") or DEFAULT_SPAN_EXPORT).strip().lower()
    if value not in SPAN_EXPORT_MODES:
        raise ConfigError(
            f"MCPTRACE_SPAN_EXPORT={value!r} is not supported; use one of {', '.join(SPAN_EXPORT_MODES)}")
    return value


def _span_feed(
    env: Mapping[str, str], drops: DropCounter, mode: str, resource: Resource,
) -> tuple[SpanFeed, SpanExporter]:
    """The queue that takes request records and other spans to the span exporter, in `mode`, and that exporter."""
    settings = feed_settings(env)
    if mode == "thread":
        exporter = span_exporter(env)
        sink = ThreadExport(exporter, resource, drops)
        return SpanFeed(sink, drops, **settings, on_shutdown=sink.shutdown), exporter
    otel = {k: v for k, v in env.items() if k.startswith("OTEL_")}
    child = ProcessSpanExporter(protocol=_protocol(env, "TRACES"), drops=drops, env=otel)
    feed = SpanFeed(lambda items: child.export_items(items, resource), drops, **settings,
                    on_shutdown=child.shutdown)
    return feed, child


def span_exporter(env: Mapping[str, str]) -> SpanExporter:
    if _protocol(env, "TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http()


def metric_exporter(env: Mapping[str, str]) -> MetricExporter:
    if _protocol(env, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http()


def _log_processor(env: Mapping[str, str], drops: DropCounter) -> Any:
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    if _protocol(env, "LOGS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Grpc

        exporter: Any = Grpc()
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Http

        exporter = Http()
    return BatchLogRecordProcessor(_CountingLogExporter(exporter, drops))


class _CountingLogExporter(LogRecordExporter):
    def __init__(self, inner: Any, drops: DropCounter) -> None:
        self.inner = inner
        self.drops = drops

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        result: LogRecordExportResult
        try:
            result = self.inner.export(batch)
        except Exception:
            result = LogRecordExportResult.FAILURE
        if result is not LogRecordExportResult.SUCCESS:
            self.drops.add("logs", "export_failed", len(batch))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


@dataclass
class Providers:
    """The providers one process exports through, and what they dropped; `shutdown()` flushes them."""

    meter_provider: MeterProvider | None = None
    tracer_provider: TracerProvider | None = None
    logger_provider: Any = None
    drops: DropCounter = field(default_factory=DropCounter)
    #: The OTLP metric export when it shares the `/metrics` reader's aggregation (see `_metricexport`).
    metric_export: PeriodicMetricExport | None = None
    #: Where request records go to become spans (with `tracer_provider`'s spans), when traces are exported.
    span_feed: SpanFeed | None = None
    #: What sends the spans out: a `ProcessSpanExporter`, or the OTLP exporter itself (`thread` mode).
    span_exporter: SpanExporter | None = None

    @property
    def sampler(self) -> Sampler | None:
        """The sampler `OTEL_TRACES_SAMPLER` names; None for the default (a trace's first span decides)."""
        if self.tracer_provider is None:
            return None
        sampler = self.tracer_provider.sampler
        default: str = DEFAULT_ON.get_description()  # type: ignore[no-untyped-call]
        described: str = sampler.get_description()
        return None if described == default else sampler

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and stop every exporter, giving up after `timeout` seconds (a receiver may be down)."""
        every = (self.tracer_provider, self.logger_provider, self.metric_export, self.meter_provider)
        providers = [p for p in every if p is not None]

        def run() -> None:
            for provider in providers:
                with contextlib.suppress(Exception):
                    provider.shutdown()

        worker = threading.Thread(target=run, name="mcptrace-otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout)


def providers_from_env(
    env: Mapping[str, str] | None = None, *, extra_readers: Sequence[MetricReader] = (),
    export_from: tuple[MetricReader, Snapshot] | None = None, span_export: str | None = None,
    traces: bool = True, metrics: bool = True,
) -> Providers:
    """Build the providers the `OTEL_*` variables ask for (see the module docstring).

    `export_from` is a reader (one of `extra_readers`) with a function that
    collects it: the OTLP metric export then sends that reader's data instead
    of adding a reader of its own, when the exporter accepts cumulative data
    with the default aggregations. `span_export` (`process` or `thread`) wins
    over `MCPTRACE_SPAN_EXPORT`. `traces=False` or `metrics=False` leaves that
    signal to providers set up elsewhere.
    """
    env = os.environ if env is None else env
    mode = span_export_mode(env, span_export)
    resource = make_resource()
    drops = DropCounter()
    readers = list(extra_readers)
    metric_export = None
    if metrics and metrics_export_enabled(env):
        exporter = metric_exporter(env)
        if export_from is not None and export_from[0] in readers and exports_what_prometheus_keeps(env):
            metric_export = export_from[1], exporter
        else:
            readers.append(PeriodicExportingMetricReader(exporter))
    meter_provider = None
    if metrics:
        meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, exemplar_filter=exemplar_filter(env))
    tracer_provider = None
    span_feed = spans_out = None
    if traces and traces_enabled(env):
        span_feed, spans_out = _span_feed(env, drops, mode, resource)
        tracer_provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
        tracer_provider.add_span_processor(FeedSpanProcessor(span_feed))
    logger_provider = None
    if logs_export_enabled(env):
        from opentelemetry.sdk._logs import LoggerProvider

        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(_log_processor(env, drops))
    return Providers(meter_provider=meter_provider, tracer_provider=tracer_provider,
                     logger_provider=logger_provider, drops=drops, span_feed=span_feed, span_exporter=spans_out,
                     metric_export=PeriodicMetricExport(*metric_export, env=env) if metric_export else None)
