"""`mcptrace probe`: the gate on a schedule, so "how long has it been broken" has an answer.

Every run writes one `probe_result` JSON line (the gate's verdict, the failed
step and its reason, how many runs in a row failed and since when) and updates
metrics. After `Alerting.after` consecutive failures the hooks run once for the
outage; a later pass re-arms them. Hooks are bounded and their failures are
logged, never raised: an alert that cannot be sent must not stop the probe.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from opentelemetry import metrics

from mcptrace import _fields as f
from mcptrace._errors import ConfigError
from mcptrace.gate._gate import GateOptions, GateReport, run_gate
from mcptrace.telemetry._log import EventLogger, LogSink, utc_timestamp
from mcptrace.telemetry._metrics import SEMCONV_DURATION_BUCKETS

HOOK_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True)
class Alerting:
    after: int = 3
    command: str | None = None
    webhook: str | None = None


@dataclass
class ProbeState:
    """What the probe remembers between runs."""

    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    failing_since: float | None = None  # wall-clock time of the first failure of the current outage
    alerts_sent: int = 0
    last: GateReport | None = None
    history: list[bool] = field(default_factory=list)

    def failing_seconds(self, now: float | None = None) -> float:
        if self.failing_since is None:
            return 0.0
        return round((time.time() if now is None else now) - self.failing_since, 3)

    def record(self, report: GateReport, now: float) -> None:
        self.runs += 1
        self.last = report
        self.history.append(report.ok)
        if report.ok:
            self.consecutive_failures = 0
            self.failing_since = None
        else:
            self.failures += 1
            self.consecutive_failures += 1
            if self.failing_since is None:
                self.failing_since = now


class Probe:
    """Runs the gate, records the result, logs it, counts it and alerts on outages."""

    def __init__(
        self,
        url: str,
        options: GateOptions,
        *,
        logger: EventLogger,
        alerting: Alerting | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.url = url
        self.options = options
        self.logger = logger
        self.alerting = alerting or Alerting()
        self.state = ProbeState()
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("mcptrace.probe")
        self._runs = meter.create_counter(f.M_PROBE_RUNS, description="gate runs by outcome")
        self._duration = meter.create_histogram(
            f.M_PROBE_DURATION, unit="s", description="gate run time",
            explicit_bucket_boundaries_advisory=list(SEMCONV_DURATION_BUCKETS))
        meter.create_observable_gauge(
            f.M_PROBE_FAILING_SECONDS,
            unit="s",
            description="seconds since the current outage began (0 when up)",
            callbacks=[lambda _: [metrics.Observation(self.state.failing_seconds(), {"url": self.url})]],
        )
        meter.create_observable_gauge(
            f.M_PROBE_CONSECUTIVE_FAILURES,
            description="failed runs in a row",
            callbacks=[lambda _: [metrics.Observation(self.state.consecutive_failures, {"url": self.url})]],
        )

    async def run_once(self) -> GateReport:
        report = await run_gate(self.url, self.options)
        now = time.time()
        was_failing = self.state.failing_since is not None
        self.state.record(report, now)
        status = f.SUCCESS if report.ok else f.FAILURE
        self._runs.add(1, {"url": self.url, f.STATUS: status})
        self._duration.record(report.duration_ms / 1000, {"url": self.url})
        failed = report.failed_step
        if report.ok:
            message = "recovered" if was_failing else "gate passed"
        else:
            message = f"{failed.name}: {failed.detail}" if failed else "gate failed"
        self.logger.emit(
            f.EV_PROBE_RESULT,
            "info" if report.ok else "error",
            **{
                f.PROBE_URL: self.url,
                f.STATUS: status,
                f.DURATION_MS: report.duration_ms,
                f.FAILED_STEP: failed.name if failed else None,
                f.MESSAGE: message,
                f.CONSECUTIVE_FAILURES: self.state.consecutive_failures,
                f.FAILING_SECONDS: self.state.failing_seconds(now),
                f.FAILING_SINCE: utc_timestamp(self.state.failing_since)
                if self.state.failing_since
                else None,
            },
        )
        if not report.ok and self.state.consecutive_failures == self.alerting.after:
            await self._alert(message)
        return report

    async def _alert(self, reason: str) -> None:
        payload: dict[str, Any] = {
            "event": f.EV_PROBE_ALERT,
            "url": self.url,
            "reason": reason,
            "consecutive_failures": self.state.consecutive_failures,
            "failing_seconds": self.state.failing_seconds(),
            "failing_since": utc_timestamp(self.state.failing_since) if self.state.failing_since else None,
        }
        self.state.alerts_sent += 1
        if self.alerting.command:
            await anyio.to_thread.run_sync(self._run_command, payload)
        if self.alerting.webhook:
            await self._post_webhook(payload)

    def _run_command(self, payload: dict[str, Any]) -> None:
        env = {
            **os.environ,
            "MCPTRACE_PROBE_URL": self.url,
            "MCPTRACE_PROBE_REASON": str(payload["reason"]),
            "MCPTRACE_PROBE_FAILURES": str(payload["consecutive_failures"]),
            "MCPTRACE_PROBE_FAILING_SECONDS": str(payload["failing_seconds"]),
        }
        try:
            done = subprocess.run(
                self.alerting.command or "",
                shell=True,
                env=env,
                timeout=HOOK_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
            error = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.decode()[-200:]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._log_alert("command", error)

    async def _post_webhook(self, payload: dict[str, Any]) -> None:
        error = None
        try:
            async with httpx.AsyncClient(timeout=HOOK_TIMEOUT_SECONDS) as client:
                response = await client.post(self.alerting.webhook or "", json=payload)
            if response.status_code >= 400:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._log_alert("webhook", error)

    def _log_alert(self, hook: str, error: str | None) -> None:
        self.logger.emit(
            f.EV_PROBE_ALERT,
            "warning" if error is None else "error",
            **{
                f.PROBE_URL: self.url,
                f.STATUS: f.FAILURE if error else f.SUCCESS,
                f.ERROR: error,
                f.MESSAGE: f"{hook} alert {'failed' if error else 'sent'}",
                f.CONSECUTIVE_FAILURES: self.state.consecutive_failures,
                f.FAILING_SECONDS: self.state.failing_seconds(),
            },
        )

    async def run(self, *, every: float, count: int | None = None) -> ProbeState:
        """Run on a fixed cadence (no drift) until `count` runs are done, or forever.

        A run that overruns its slot skips the slots it missed rather than firing a burst.
        """
        start = time.monotonic()
        runs = 0
        while count is None or runs < count:
            await self.run_once()
            runs += 1
            if count is not None and runs >= count:
                break
            elapsed = time.monotonic() - start
            await anyio.sleep((math.floor(elapsed / every) + 1) * every - elapsed)
        return self.state


def run_probe(
    url: str,
    options: GateOptions,
    *,
    every: float,
    count: int | None = None,
    alerting: Alerting | None = None,
    log_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ProbeState:
    """The CLI's entry point: JSON lines on stderr (and in `log_file`), until `count` runs or Ctrl-C.

    Metrics go where the standard variables say (`probe_metrics`).
    """
    logger = EventLogger(LogSink(log_file, stderr=True))
    try:
        with probe_metrics(os.environ if env is None else env) as meter_provider:
            probe = Probe(url, options, logger=logger, alerting=alerting, meter_provider=meter_provider)
            return anyio.run(lambda: probe.run(every=every, count=count))
    finally:
        logger.close()


@contextmanager
def probe_metrics(env: Mapping[str, str]) -> Iterator[metrics.MeterProvider | None]:
    """The probe's meter provider, from OpenTelemetry's standard variables.

    `OTEL_METRICS_EXPORTER=prometheus` (alone or in a list) serves the metrics for
    Prometheus to scrape on `OTEL_EXPORTER_PROMETHEUS_HOST`:`OTEL_EXPORTER_PROMETHEUS_PORT`
    (default localhost:9464, path `/metrics`); an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`)
    exports them over OTLP. With neither, the global provider is used (None).
    """
    from prometheus_client import start_http_server

    from mcptrace.telemetry._otlp import metrics_export_enabled, providers_from_env
    from mcptrace.telemetry._prometheus import PrometheusEndpoint

    exporters = {e.strip().lower() for e in env.get("OTEL_METRICS_EXPORTER", "").split(",")} - {""}
    endpoint = PrometheusEndpoint() if "prometheus" in exporters else None
    # Named exporters are the only ones; none named: OTLP when an endpoint is set, as for the server.
    otlp = "otlp" if "otlp" in exporters else ("none" if exporters else "")
    otlp_env = {**env, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": otlp}
    if endpoint is None and not metrics_export_enabled(otlp_env):
        yield None
        return
    providers = providers_from_env(otlp_env, extra_readers=[endpoint.reader] if endpoint else [])
    server = None
    try:
        if endpoint is not None:
            host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST") or "localhost"
            port = env.get("OTEL_EXPORTER_PROMETHEUS_PORT") or "9464"
            try:
                server, _ = start_http_server(int(port), addr=host, registry=endpoint.registry)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot serve the probe's metrics on {host}:{port}: {exc}") from None
        yield providers.meter_provider
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        providers.shutdown()
