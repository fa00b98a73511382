"""The server's metrics: per-tool calls and durations, sessions, downstream errors, MCP semconv.

Instruments are created once from a `Meter` (any provider: ours from the
`OTEL_*` variables, a user's, or the no-op default), so recording a tool call is
a dict increment (the call counter is read at collection) and a histogram
record. Gauges that describe state (sessions, guards, dropped telemetry) are
observable: read at collection time, never on the request path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from mcptrace import _fields as f

#: Seconds. Dense from 1 ms to 1 s (where most tool calls land), then out to 10 minutes,
#: so p50/p95/p99 interpolate within a bucket of the right order of magnitude.
TOOL_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
)
#: The boundaries the MCP semantic conventions recommend for operation and session durations.
SEMCONV_DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)

METER_NAME = "mcptrace"

#: (tool, status) series kept apart; beyond this, calls are counted under the SDK's overflow
#: attribute, as its own cardinality limit does for the histogram.
MAX_TOOL_SERIES = 2000
_OVERFLOW = ("", "")
_OVERFLOW_ATTRS: dict[str, bool] = {"otel.metric.overflow": True}


class ServerMetrics:
    """Every instrument mcptrace records into; one per instrumented server."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        # Counted here and reported at collection time: a dict increment per call instead of one
        # more trip through every reader's aggregation (the histogram below already takes one).
        self._tool_counts: dict[tuple[str, str], int] = {}
        self._tool_counts_lock = threading.Lock()
        meter.create_observable_counter(
            f.M_TOOL_CALLS, [self._observe_tool_calls], unit="{call}",
            description="tools/call requests by tool and outcome")
        self.tool_duration = meter.create_histogram(
            f.M_TOOL_DURATION, unit="s", description="tools/call duration by tool and outcome",
            explicit_bucket_boundaries_advisory=list(TOOL_DURATION_BUCKETS))
        self.downstream_errors = meter.create_counter(
            f.M_DOWNSTREAM_ERRORS, unit="{error}", description="failed calls to a dependency, by service")
        self.operation_duration = meter.create_histogram(
            f.M_OPERATION_DURATION, unit="s",
            description="MCP request duration as observed on the server (semantic conventions)",
            explicit_bucket_boundaries_advisory=list(SEMCONV_DURATION_BUCKETS))
        self.session_duration = meter.create_histogram(
            f.M_SESSION_DURATION, unit="s",
            description="MCP session duration as observed on the server (semantic conventions)",
            explicit_bucket_boundaries_advisory=list(SEMCONV_DURATION_BUCKETS))
        self._tool_attrs: dict[tuple[str, str], Mapping[str, str | bool]] = {}

    def record_tool_call(self, tool: str, status: str, duration_s: float) -> None:
        key = (tool, status)
        attrs = self._tool_attrs.get(key)
        if attrs is None:  # one dict per (tool, status): no allocation on the hot path
            if len(self._tool_attrs) >= MAX_TOOL_SERIES:  # unknown tool names a client made up
                key = _OVERFLOW
                attrs = _OVERFLOW_ATTRS
            else:
                attrs = self._tool_attrs.setdefault(key, {f.L_TOOL: tool, f.L_STATUS: status})
        with self._tool_counts_lock:
            self._tool_counts[key] = self._tool_counts.get(key, 0) + 1
        self.tool_duration.record(duration_s, attrs)

    def _observe_tool_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._tool_counts_lock:
            counts = list(self._tool_counts.items())
        return [Observation(n, self._tool_attrs.get(key, _OVERFLOW_ATTRS)) for key, n in counts]

    def record_operation(self, attributes: Mapping[str, str], duration_s: float) -> None:
        self.operation_duration.record(duration_s, attributes)

    def record_session(self, duration_s: float, attributes: Mapping[str, str]) -> None:
        self.session_duration.record(duration_s, attributes)

    def record_downstream_error(self, service: str) -> None:
        self.downstream_errors.add(1, {f.L_SERVICE: service})

    def observe_active_sessions(self, count: Callable[[], int]) -> None:
        """Report `count()` as `mcp_active_sessions` at each collection."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(count())]
            except Exception:
                return []

        self.meter.create_observable_gauge(
            f.M_ACTIVE_SESSIONS, [callback], unit="{session}", description="open MCP sessions")

    def observe_session_rejections(self, count: Callable[[], int]) -> None:
        """Report `count()` (requests refused at the session cap) as a counter at each collection."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(count())]

        self.meter.create_observable_counter(
            f.M_SESSION_LIMITED, [callback], unit="{request}",
            description="new sessions refused because the server was at its session limit")

    def observe_dropped(self, dropped: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Report telemetry the exporters lost, keyed by (signal, reason)."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {f.L_SIGNAL: signal, f.L_REASON: reason})
                    for (signal, reason), n in dropped().items()]

        self.meter.create_observable_counter(
            f.M_TELEMETRY_DROPPED, [callback], unit="{item}",
            description="spans and log records the exporters could not deliver")


@runtime_checkable
class GuardCounters(Protocol):
    """What a guard layer exposes for metrics; read at collection time, so plain ints are enough.

    `breaker_states` maps a dependency to 0 (closed), 1 (half-open) or 2 (open).
    """

    @property
    def auth_failures(self) -> int: ...

    @property
    def rate_limited(self) -> int: ...

    @property
    def breaker_states(self) -> Mapping[str, int]: ...


#: Every `refusal_reason` of the log contract: each is reported from the start (as 0), so a rate or an
#: alert over one reason has a series before the first refusal.
REFUSAL_REASONS: tuple[str, ...] = (
    f.R_UNAUTHENTICATED, f.R_FORBIDDEN, f.R_RATE_LIMITED, f.R_SUSPENDED, f.R_SESSION_CAP, f.R_OVERLOADED,
)


def register_guard_metrics(meter: Meter, guards: GuardCounters) -> None:
    """Publish a guard layer's counters as metrics without touching its hot path.

    Call once at start-up with the object the guards update; the values are
    read whenever metrics are collected (OTLP export or a `/metrics` scrape).
    A `refusals()` method, when `guards` has one, gives the refused requests by
    `refusal_reason` for `mcptrace_requests_refused_total{reason}`.
    """
    refusals: Callable[[], Mapping[str, int]] | None = getattr(guards, "refusals", None)

    def auth(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(guards.auth_failures)]

    def limited(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(guards.rate_limited)]

    def breakers(options: CallbackOptions) -> Iterable[Observation]:
        states = guards.breaker_states
        return [Observation(state, {f.L_SERVICE: service}) for service, state in states.items()]

    def refused(options: CallbackOptions) -> Iterable[Observation]:
        counts = dict.fromkeys(REFUSAL_REASONS, 0)
        if refusals is not None:
            counts.update((reason, n) for reason, n in refusals().items() if reason in counts)
        return [Observation(n, {f.L_REASON: reason}) for reason, n in counts.items()]

    meter.create_observable_counter(f.M_AUTH_FAILURES, [auth], unit="{request}",
                                    description="requests refused for missing or bad credentials")
    meter.create_observable_counter(f.M_RATE_LIMITED, [limited], unit="{request}",
                                    description="requests refused by the rate limiter")
    meter.create_observable_gauge(f.M_BREAKER_STATE, [breakers],
                                  description="circuit breaker per dependency: 0 closed, 1 half-open, 2 open")
    if refusals is not None:
        meter.create_observable_counter(
            f.M_REQUESTS_REFUSED, [refused], unit="{request}",
            description="requests a guard answered instead of the server, by refusal reason")
