"""`/metrics`: the same instruments the OTLP exporter sees, in Prometheus text format.

Uses OpenTelemetry's Prometheus reader over a private `prometheus_client`
registry, so one set of instruments feeds both outputs and two servers in one
process never share series.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class PrometheusEndpoint:
    """A metric reader to give the `MeterProvider`, and the Starlette endpoint that renders it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.reader = PrometheusMetricReader(disable_target_info=True, registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: Any) -> Any:
        """Starlette endpoint (a bound method, so Starlette passes it a `Request`)."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        body = await run_in_threadpool(self.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
