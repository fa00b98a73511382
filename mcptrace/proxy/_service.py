"""What every proxy mode holds: the log, the guards, the telemetry and the observer, built from one `Config`."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from mcptrace._config import Config
from mcptrace.guards._setup import GuardMetricsView, Guards, build_guards
from mcptrace.proxy._observe import TARGET_SERVICE, Observer
from mcptrace.proxy._telemetry import ProxyTelemetry, build_telemetry
from mcptrace.server._app import make_logger
from mcptrace.telemetry._log import EventLogger


@dataclass
class ProxyService:
    config: Config
    logger: EventLogger
    guards: Guards
    telemetry: ProxyTelemetry
    observer: Observer

    async def aclose(self) -> None:
        await self.guards.aclose()
        await anyio.to_thread.run_sync(self.telemetry.shutdown)


def build_proxy_service(
    config: Config, *, transport: str, target: str, logger: EventLogger | None = None,
) -> ProxyService:
    """The parts `mcptrace serve` has, for a server the proxy stands in front of.

    `transport` is the client's side (`stdio` or `http`), as on serve's lines.
    """
    logger = logger or make_logger(config)
    guards = build_guards(config, logger)
    telemetry = build_telemetry(logger, transport=transport, target=target, span_export=config.span_export)
    telemetry.register_guards(GuardMetricsView(guards))
    observer = Observer(
        logger, telemetry, limiter=guards.limiter, breaker=guards.breakers.get(TARGET_SERVICE),
        transport=transport, request_timeout=config.request_timeout,
    )
    return ProxyService(config, logger, guards, telemetry, observer)
