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
  `OTEL_BSP_*` size the span queue and its batches (64 spans per export unless
  `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` is set); `OTEL_SDK_DISABLED=true` turns everything off (the
  SDK's meter provider then hands out no-op meters, so `/metrics` is empty too).
- `OTEL_METRICS_EXEMPLAR_FILTER`: exemplars are off unless this asks for them
  (`trace_based`, `always_on`). With them on, every measurement inside a sampled
  span is offered to an exemplar reservoir of every reader, which roughly doubles
  what a metric costs on the request path.

Exporters run on background threads behind bounded queues: a receiver that is
down or slow costs dropped items, counted in `DropCounter`, never a request.
Spans are encoded and sent by a child process (`_spanprocess`) unless
`MCPTRACE_SPAN_EXPORT=thread` keeps that on the batch thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
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
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from mcptrace._errors import ConfigError
from mcptrace._version import __version__
from mcptrace.telemetry._metricexport import PeriodicMetricExport, Snapshot, exports_what_prometheus_keeps

DEFAULT_SERVICE_NAME = "mcptrace"
PROTOCOLS = ("http/protobuf", "grpc")
EXEMPLAR_FILTERS: dict[str, type[ExemplarFilter]] = {
    "always_off": AlwaysOffExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "trace_based": TraceBasedExemplarFilter,
}


class DropCounter:
    """Items each signal lost, by reason (`queue_full`, `export_failed`); safe across threads."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, signal: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(signal, reason)] += n

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, signal: str | None = None) -> int:
        return sum(n for (s, _), n in self.snapshot().items() if signal is None or s == signal)


class CountingSpanExporter(SpanExporter):
    """Passes spans to an exporter and counts the ones it failed to deliver."""

    def __init__(self, inner: SpanExporter, drops: DropCounter) -> None:
        self.inner = inner
        self.drops = drops

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.drops.add("traces", "export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans its bounded queue pushes out when full."""

    def __init__(self, exporter: SpanExporter, drops: DropCounter, **kwargs: Any) -> None:
        super().__init__(CountingSpanExporter(exporter, drops), **kwargs)
        self.drops = drops
        batch = getattr(self, "_batch_processor", None)
        self._queue = getattr(batch, "_queue", None)
        self._max = getattr(batch, "_max_queue_size", None)

    def on_end(self, span: ReadableSpan) -> None:
        if self._queue is not None and self._max is not None and len(self._queue) >= self._max:
            self.drops.add("traces", "queue_full")
        super().on_end(span)


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


def make_resource() -> Resource:
    """`OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` as given, `service.name=mcptrace` otherwise."""
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return hashed_resource(resource.attributes, resource.schema_url)


def hashed_resource(attributes: Any, schema_url: str | None = None) -> Resource:
    """A resource as given, hashed once (see `_HashedOnce`)."""
    return _HashedOnce(attributes, schema_url)


class _HashedOnce(Resource):
    """A `Resource` that computes its hash once.

    The OTLP encoders group every exported span and metric by resource, and
    `Resource.__hash__` serialises all its attributes to JSON each time; a
    resource never changes, so once is enough.
    """

    def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


#: Spans per export unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says otherwise. The SDK's 512 has the
#: exporter encode for about 25 ms at a time, in Python, and requests wait for the interpreter
#: lock meanwhile: smaller batches cut that wait (the p99) for about the same CPU.
EXPORT_BATCH_SIZE = 64


def export_batch_size(env: Mapping[str, str]) -> int | None:
    """mcptrace's batch size, or None to leave it to the SDK (which reads the `OTEL_BSP_*` variables)."""
    if _env(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        return None
    queue = _env(env, "OTEL_BSP_MAX_QUEUE_SIZE")
    if not queue:
        return EXPORT_BATCH_SIZE
    if not queue.isdigit() or int(queue) < 1:
        return None  # the SDK reports and replaces a value it cannot use
    return min(EXPORT_BATCH_SIZE, int(queue))  # a batch is never more than the queue holds


#: Where spans are encoded and sent (`MCPTRACE_SPAN_EXPORT`): a child process, or the batch thread.
SPAN_EXPORT_MODES = ("process", "thread")
DEFAULT_SPAN_EXPORT = "process"


def span_export_mode(env: Mapping[str, str], given: str | None = None) -> str:
    """`given`, else `MCPTRACE_SPAN_EXPORT`, else the default; `ConfigError` for anything else."""
    value = (given or _env(env, "MCPTRACE_SPAN_EXPORT") or DEFAULT_SPAN_EXPORT).strip().lower()
    if value not in SPAN_EXPORT_MODES:
        raise ConfigError(
            f"MCPTRACE_SPAN_EXPORT={value!r} is not supported; use one of {', '.join(SPAN_EXPORT_MODES)}")
    return value


def _traces_exporter(env: Mapping[str, str], drops: DropCounter, mode: str) -> SpanExporter:
    if mode == "thread":
        return span_exporter(env)
    from mcptrace.telemetry._spanprocess import ProcessSpanExporter

    otel = {k: v for k, v in env.items() if k.startswith("OTEL_")}
    return ProcessSpanExporter(protocol=_protocol(env, "TRACES"), drops=drops, env=otel)


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

    meter_provider: MeterProvider
    tracer_provider: TracerProvider | None = None
    logger_provider: Any = None
    drops: DropCounter = field(default_factory=DropCounter)
    #: The OTLP metric export when it shares the `/metrics` reader's aggregation (see `_metricexport`).
    metric_export: PeriodicMetricExport | None = None

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
) -> Providers:
    """Build the providers the `OTEL_*` variables ask for (see the module docstring).

    `export_from` is a reader (one of `extra_readers`) with a function that
    collects it: the OTLP metric export then sends that reader's data instead
    of adding a reader of its own, when the exporter accepts cumulative data
    with the default aggregations. `span_export` (`process` or `thread`) wins
    over `MCPTRACE_SPAN_EXPORT`.
    """
    env = os.environ if env is None else env
    mode = span_export_mode(env, span_export)
    resource = make_resource()
    drops = DropCounter()
    readers = list(extra_readers)
    metric_export = None
    if metrics_export_enabled(env):
        exporter = metric_exporter(env)
        if export_from is not None and export_from[0] in readers and exports_what_prometheus_keeps(exporter):
            metric_export = export_from[1], exporter
        else:
            readers.append(PeriodicExportingMetricReader(exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, exemplar_filter=exemplar_filter(env))
    tracer_provider = None
    if traces_enabled(env):
        spans_out = _traces_exporter(env, drops, mode)
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            CountingBatchSpanProcessor(spans_out, drops, max_export_batch_size=export_batch_size(env)))
    logger_provider = None
    if logs_export_enabled(env):
        from opentelemetry.sdk._logs import LoggerProvider

        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(_log_processor(env, drops))
    return Providers(meter_provider=meter_provider, tracer_provider=tracer_provider,
                     logger_provider=logger_provider, drops=drops,
                     metric_export=PeriodicMetricExport(*metric_export, env=env) if metric_export else None)
