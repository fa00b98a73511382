"""Telemetry for `mcptrace serve`: `instrument()` with the `OTEL_*` variables, `/metrics`, the guards, shutdown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcptrace.middleware._instrument import Instrumentation, instrument
from mcptrace.telemetry._log import EventLogger
from mcptrace.telemetry._logbridge import OtlpLogBridge
from mcptrace.telemetry._otlp import Providers, providers_from_env
from mcptrace.telemetry._prometheus import PrometheusEndpoint


@dataclass
class ServerTelemetry:
    providers: Providers
    prometheus: PrometheusEndpoint
    instrumentation: Instrumentation

    def health(self) -> dict[str, Any]:
        """For `/health`: what is exported, and what the exporters lost so far."""
        drops = self.providers.drops
        return {
            "traces": self.providers.tracer_provider is not None,
            "logs": self.providers.logger_provider is not None,
            "spans_dropped": drops.total("traces"),
            "logs_dropped": drops.total("logs"),
        }

    def shutdown(self, timeout: float = 5.0) -> None:
        self.instrumentation.shutdown(timeout)


def export_providers(
    logger: EventLogger, *, env: Mapping[str, str] | None = None, span_export: str | None = None,
) -> tuple[Providers, PrometheusEndpoint]:
    """The providers the `OTEL_*` variables ask for, a `/metrics` endpoint fed by the same meter, and
    `logger`'s lines bridged to the OTLP log exporter when one is configured.

    For a server that opens its spans itself (`mcptrace proxy`). `span_export` (`process`
    or `thread`) wins over `MCPTRACE_SPAN_EXPORT`.
    """
    prometheus = PrometheusEndpoint()
    reader = prometheus.reader
    providers = providers_from_env(env, extra_readers=[reader], export_from=(reader, reader.snapshot),
                                   span_export=span_export)
    if providers.logger_provider is not None:
        logger.listeners.append(OtlpLogBridge(providers.logger_provider))
    return providers, prometheus


def setup_telemetry(
    server: Any, logger: EventLogger, *, transport: str = "http", env: Mapping[str, str] | None = None,
    span_export: str | None = None,
) -> ServerTelemetry:
    """Instrument `server` and export as the `OTEL_*` variables say; `/metrics` is always fed.

    `instrument()` sets the providers up itself (so each request's span is built from its
    record); the caller serves the `/metrics` route (`ServerTelemetry.prometheus.endpoint`).
    `span_export` (`process` or `thread`) wins over `MCPTRACE_SPAN_EXPORT`.
    """
    instrumentation = instrument(server, logger=logger, transport=transport, env=env, span_export=span_export,
                                 metrics_path=None)
    providers, prometheus = instrumentation.providers, instrumentation.prometheus
    if providers is None or prometheus is None:
        raise RuntimeError("the process already has OpenTelemetry providers: `mcptrace serve` sets up its own")
    if providers.logger_provider is not None:
        logger.listeners.append(OtlpLogBridge(providers.logger_provider))
    return ServerTelemetry(providers, prometheus, instrumentation)
