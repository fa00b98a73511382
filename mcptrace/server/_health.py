"""`/health`: the state of every dependency, checked for real, cached briefly.

Each check answers `{"status": healthy|degraded|unhealthy, "latency_ms"}` or
`{"status", "error"}`. The server is unhealthy (HTTP 503) when a dependency it
cannot work without fails (the database); degraded (HTTP 200) when a part is
impaired (upstream down, a breaker not closed, the log sink unwritable, the
last shipment of a rotated log failed, an exporter failing). Answers are reused
for `cache_seconds` so load balancers can poll often without load; concurrent
polls share one run of the checks.
`/livez` (process alive) is separate and checks nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

from mcptrace._version import __version__
from mcptrace.guards._breaker import CLOSED, Breakers
from mcptrace.server._db import Database
from mcptrace.telemetry._log import LogSink

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"

#: An extra check (e.g. the OTLP exporter's state): returns a check dict, may raise.
Check = Callable[[], Awaitable[dict[str, Any]]]


class HealthChecker:
    def __init__(
        self,
        *,
        db: Database | None,
        sink: LogSink,
        breakers: Breakers,
        upstream_url: str | None,
        http: Callable[[], httpx.AsyncClient | None],
        timeout: float = 1.0,
        cache_seconds: float = 1.0,
        started: float | None = None,
    ) -> None:
        self.db = db
        self.sink = sink
        self.breakers = breakers
        self.upstream_url = upstream_url
        self.http = http
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.started = started if started is not None else time.monotonic()
        #: name -> (check, critical). Other parts (the OTLP exporter) register here.
        self.extra: dict[str, tuple[Check, bool]] = {}
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = anyio.Lock()

    async def report(self) -> tuple[dict[str, Any], int]:
        """(body, HTTP status) of `/health`."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                self._cached = (now, await self._run())
            checks = self._cached[1]
        critical = {"sqlite", *(name for name, (_, crit) in self.extra.items() if crit)}  # sqlite when there is one
        statuses = {name: c["status"] for name, c in checks.items()}
        if any(statuses.get(name) == UNHEALTHY for name in critical):
            overall = UNHEALTHY
        elif any(s != HEALTHY for s in statuses.values()):
            overall = DEGRADED
        else:
            overall = HEALTHY
        body = {
            "status": overall,
            "checks": checks,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
        }
        return body, 503 if overall == UNHEALTHY else 200

    async def _run(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        probes: dict[str, Check] = {"log_sink": self._sink}
        if self.db is not None:  # `mcptrace proxy` has no database; its target is an extra, critical check
            probes["sqlite"] = self._sqlite
        if self.upstream_url:
            probes["upstream"] = self._upstream
        if self.sink.shipping is not None:
            probes["log_shipping"] = self._shipping
        probes.update({name: check for name, (check, _) in self.extra.items()})

        async def run(name: str, check: Check) -> None:
            start = time.perf_counter()
            try:
                with anyio.fail_after(self.timeout):
                    result = await check()
                result.setdefault("latency_ms", round((time.perf_counter() - start) * 1000, 2))
            except TimeoutError:
                result = {"status": UNHEALTHY, "error": f"no answer within {self.timeout:g}s"}
            except Exception as exc:
                result = {"status": UNHEALTHY, "error": f"{type(exc).__name__}: {exc}"[:300]}
            checks[name] = result

        async with anyio.create_task_group() as tg:
            for name, check in probes.items():
                tg.start_soon(run, name, check)
        states = self.breakers.states()
        checks["breakers"] = {
            "status": HEALTHY if all(s == CLOSED for s in states.values()) else DEGRADED,
            "states": states,
        }
        return dict(sorted(checks.items()))

    async def _sqlite(self) -> dict[str, Any]:
        assert self.db is not None
        await anyio.to_thread.run_sync(self.db.check, abandon_on_cancel=True)
        return {"status": HEALTHY}

    async def _sink(self) -> dict[str, Any]:
        writable = await anyio.to_thread.run_sync(self.sink.writable, abandon_on_cancel=True)
        stats = self.sink.stats
        counts = {"lines_written": stats.lines_written, "lines_dropped": stats.lines_dropped,
                  "lines_torn": stats.lines_torn, "gaps": stats.gaps}
        if writable:
            return {"status": HEALTHY, **counts}
        return {"status": DEGRADED, "error": stats.last_error or "log file not writable", **counts}

    async def _shipping(self) -> dict[str, Any]:
        assert self.sink.shipping is not None
        return await anyio.to_thread.run_sync(self.sink.shipping, abandon_on_cancel=True)

    async def _upstream(self) -> dict[str, Any]:
        client = self.http()
        if client is None:
            return {"status": DEGRADED, "error": "HTTP client not started"}
        assert self.upstream_url is not None
        response = await client.get(f"{self.upstream_url.rstrip('/')}/health", timeout=self.timeout)
        if response.status_code >= 400:
            return {"status": UNHEALTHY, "error": f"HTTP {response.status_code}"}
        return {"status": HEALTHY}
