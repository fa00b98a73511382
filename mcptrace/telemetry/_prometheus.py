"""`/metrics`: the same instruments the OTLP exporter sees, in Prometheus text format.

Uses OpenTelemetry's Prometheus reader over a private `prometheus_client`
registry, so one set of instruments feeds both outputs and two servers in one
process never share series. The reader can also hand its collections to the
OTLP metric export (`SharedPrometheusReader.snapshot`): every measurement is then
aggregated once, where a second reader would aggregate it again on the request path.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricsData
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class SharedPrometheusReader(PrometheusMetricReader):
    """OpenTelemetry's Prometheus reader whose cumulative collections can also be taken for an exporter."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._taking = threading.local()

    def snapshot(self, timeout_millis: float = 10_000) -> MetricsData | None:
        """Collect now and return the data to the caller instead of queueing it for the next scrape."""
        self._taking.data = None
        self._taking.active = True
        try:
            self.collect(timeout_millis=timeout_millis)
        finally:
            self._taking.active = False
        data: MetricsData | None = self._taking.data
        self._taking.data = None
        return data

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if getattr(self._taking, "active", False):
            self._taking.data = metrics_data
            return
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)


class PrometheusEndpoint:
    """A metric reader to give the `MeterProvider`, and the Starlette endpoint that renders it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.reader = SharedPrometheusReader(registry=self.registry)  # with `target_info`: the resource

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Any) -> Any:
        """Starlette endpoint (a bound method, so Starlette passes it a `Request`)."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        body = await run_in_threadpool(self.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
