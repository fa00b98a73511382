"""The per-request histograms, aggregated in plain Python and read out for `/metrics` and for OTLP.

`mcp_tool_duration_seconds` and `mcp.server.operation.duration` take one
measurement per request. Through the OpenTelemetry SDK each measurement is
validated, its attributes copied and hashed, and offered to every reader, which
costs more than the rest of the request's metrics together. Here a measurement
is a dict lookup by a key the caller already holds, a bisect and three adds
under a lock. The aggregation is the SDK's explicit-bucket histogram with
cumulative temporality (counts per bucket, sum, count, min, max), and it is
read out twice from the same numbers:

- `/metrics`: a `prometheus_client` collector on the endpoint's registry, with
  the names and labels the OpenTelemetry Prometheus exporter gives the SDK's
  histograms (`mcp_server_operation_duration_seconds{mcp_method_name=...}`);
- OTLP: `HistogramDataPoint`s (the SDK's public data types) added to each
  collection the metric export sends (`with_histograms`).

`ServerMetrics` uses it only when mcptrace set up the meter provider itself
with those two outputs; with a provider of the application's, measurements go
through that provider's instruments as usual.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from mcptrace._version import __version__

#: Label values of the OpenTelemetry Prometheus exporter's scope labels, as on the SDK's metrics.
_SCOPE_LABELS = {"otel_scope_name": "mcptrace", "otel_scope_schema_url": "", "otel_scope_version": __version__}


class _Series:
    __slots__ = ("attributes", "count", "counts", "max", "min", "sum")

    def __init__(self, attributes: Mapping[str, Any], buckets: int) -> None:
        self.attributes = attributes
        self.counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")


class FastHistogram:
    """One cumulative explicit-bucket histogram (see the module docstring)."""

    def __init__(self, name: str, unit: str, description: str, boundaries: Sequence[float],
                 *, prometheus_name: str) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.boundaries = list(boundaries)
        self.prometheus_name = prometheus_name
        self.start_ns = time.time_ns()
        self._series: dict[Any, _Series] = {}
        self._lock = threading.Lock()

    def record(self, value: float, key: Any, attributes: Mapping[str, Any]) -> None:
        """Add `value` to the series of `key` (whose attributes are `attributes`: one dict per key)."""
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(attributes, len(self.boundaries) + 1)
            series.counts[bisect.bisect_left(self.boundaries, value)] += 1
            series.count += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value

    def has_data(self) -> bool:
        return bool(self._series)

    def _copy(self) -> list[tuple[Mapping[str, Any], list[int], int, float, float, float]]:
        with self._lock:
            return [(s.attributes, list(s.counts), s.count, s.sum, s.min, s.max) for s in self._series.values()]

    def data_points(self) -> list[HistogramDataPoint]:
        now = time.time_ns()
        return [
            HistogramDataPoint(attributes=dict(attributes), start_time_unix_nano=self.start_ns, time_unix_nano=now,
                               count=count, sum=total, bucket_counts=counts, explicit_bounds=self.boundaries,
                               min=low, max=high, exemplars=[])
            for attributes, counts, count, total, low, high in self._copy()
        ]

    def metric(self) -> Metric:
        return Metric(name=self.name, description=self.description, unit=self.unit, data=Histogram(
            data_points=self.data_points(), aggregation_temporality=AggregationTemporality.CUMULATIVE))

    def family(self) -> HistogramMetricFamily | None:
        series = self._copy()
        if not series:
            return None
        keys = sorted({_label(k) for attributes, *_ in series for k in attributes})
        names = [*keys, *_SCOPE_LABELS]
        family = HistogramMetricFamily(self.prometheus_name, self.description, labels=names)
        for attributes, counts, _, total, _, _ in series:
            by_label = {_label(k): str(v) for k, v in attributes.items()}
            values = [by_label.get(k, "") for k in keys] + list(_SCOPE_LABELS.values())
            cumulative, buckets = 0, []
            for bound, n in zip([*self.boundaries, float("inf")], counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            family.add_metric(values, buckets, total)
        return family


def _label(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class HistogramCollector(Collector):
    """`/metrics`: the histograms as Prometheus families, beside the SDK's metrics in the same registry."""

    def __init__(self, histograms: Sequence[FastHistogram]) -> None:
        self.histograms = list(histograms)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        for histogram in self.histograms:
            family = histogram.family()
            if family is not None:
                yield family


def with_histograms(data: MetricsData, histograms: Sequence[FastHistogram], scope_name: str) -> MetricsData:
    """`data` (a collection for OTLP) with the histograms added to the scope named `scope_name`."""
    metrics = [h.metric() for h in histograms if h.has_data()]
    if not metrics or not data.resource_metrics:
        return data
    resource_metrics = list(data.resource_metrics)
    first = resource_metrics[0]
    scopes = list(first.scope_metrics)
    for i, scope in enumerate(scopes):
        if scope.scope.name == scope_name:
            scopes[i] = replace(scope, metrics=[*scope.metrics, *metrics])
            break
    else:
        scopes.append(ScopeMetrics(scope=InstrumentationScope(scope_name, __version__), metrics=metrics,
                                   schema_url=""))
    resource_metrics[0] = replace(first, scope_metrics=scopes)
    return MetricsData(resource_metrics=resource_metrics)
