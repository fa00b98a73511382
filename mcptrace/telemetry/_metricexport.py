"""OTLP metric export on a timer, from a reader that is already aggregating (the `/metrics` one).

The SDK's `PeriodicExportingMetricReader` is a second reader: every histogram
record and counter add on the request path is then aggregated twice, once per
reader. Exporting the Prometheus reader's cumulative collections instead keeps
one aggregation and sends the same data (same names, labels, temporality).
It applies only when the exporter asks for what that reader keeps, cumulative
temporality and the default aggregations; otherwise `providers_from_env()`
adds the SDK's own periodic reader.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData

DEFAULT_INTERVAL_MS = 60_000.0
DEFAULT_TIMEOUT_MS = 30_000.0

Snapshot = Callable[[float], "MetricsData | None"]


def exports_what_prometheus_keeps(env: Mapping[str, str]) -> bool:
    """Whether the OTLP metric exporter the `OTEL_*` variables make wants what the Prometheus reader keeps.

    That reader keeps cumulative data with the default aggregations: the
    exporter wants the same unless `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`
    asks for `delta` or `lowmemory`, or `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`
    for exponential histograms.
    """
    temporality = env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "").strip().lower()
    histogram = env.get("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "").strip().lower()
    return temporality in ("", "cumulative") and histogram in ("", "explicit_bucket_histogram")


def _millis(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if value > 0 else default


class PeriodicMetricExport:
    """Every `OTEL_METRIC_EXPORT_INTERVAL` ms, export `snapshot()` on a daemon thread; once more at shutdown."""

    def __init__(self, snapshot: Snapshot, exporter: MetricExporter, *, env: Mapping[str, str]) -> None:
        self._snapshot = snapshot
        self._exporter = exporter
        #: Applied to each collection before it is sent (mcptrace's own histograms join it there).
        self.transform: Callable[[MetricsData], MetricsData] | None = None
        self._interval = _millis(env, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_MS) / 1000
        self._timeout_ms = _millis(env, "OTEL_METRIC_EXPORT_TIMEOUT", DEFAULT_TIMEOUT_MS)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mcptrace-metric-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.export_now()

    def export_now(self) -> None:
        """Collect and export once; a failed export is the exporter's to report, never raised."""
        with self._lock:
            # The exporter's own HTTP call must not be traced or measured by instrumented libraries.
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                data = self._snapshot(self._timeout_ms)
                if data is not None and self.transform is not None:
                    data = self.transform(data)
                if data is not None:
                    self._exporter.export(data, timeout_millis=self._timeout_ms)
            except Exception:
                pass
            finally:
                detach(token)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.export_now()
        return True

    def shutdown(self) -> None:
        """Stop the timer, export what was recorded since the last tick, and shut the exporter down."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(self._interval + self._timeout_ms / 1000)
        self.export_now()
        with contextlib.suppress(Exception):
            self._exporter.shutdown()
