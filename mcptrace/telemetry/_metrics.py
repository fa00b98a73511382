"""The server's metrics: per-tool calls and durations, sessions, downstream errors, MCP semconv.

Instruments are created once from a `Meter` (any provider: ours from the
`OTEL_*` variables, a user's, or the no-op default), so recording a tool call is
a few dict increments (the call counters are read at collection) and a histogram
record. Gauges that describe state (sessions, guards, refusals, dropped
telemetry) are observable: read at collection time, never on the request path.
Every name is declared in `mcptrace._fields`; `docs/otel.md` lists them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from mcptrace import _fields as f
from mcptrace.telemetry._histograms import FastHistogram
from mcptrace.telemetry._repeats import RepeatWatch

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
_OUTCOMES = (f.SUCCESS, f.FAILURE)
#: Dependencies whose error counter is started at 0 (see `ServerMetrics.dependency`).
MAX_SERVICES = 200

#: Every `refusal_reason` of the log contract: each is reported, 0 until it happens, so a rate
#: or an alert over one reason has a series from the start.
REFUSAL_REASONS: tuple[str, ...] = (
    f.R_UNAUTHENTICATED, f.R_FORBIDDEN, f.R_RATE_LIMITED, f.R_SUSPENDED, f.R_SESSION_CAP, f.R_OVERLOADED,
)
#: (signal, reason) pairs of `mcptrace_telemetry_dropped_total` reported from the start, as 0.
DROP_KINDS: tuple[tuple[str, str], ...] = (
    ("traces", "queue_full"), ("traces", "export_failed"), ("logs", "export_failed"), ("logs", "file_write_failed"),
)


class ServerMetrics:
    """Every instrument mcptrace records into; one per instrumented server."""

    def __init__(self, meter: Meter, *, fast_histograms: bool = False) -> None:
        """`fast_histograms`: aggregate the per-request histograms here (`_histograms`), for a meter
        provider whose readers are mcptrace's `/metrics` and its metric export, which read them out."""
        self.meter = meter
        # Counted here and reported at collection time: a dict increment per call instead of one
        # more trip through every reader's aggregation (the histogram below already takes one).
        self._tool_counts: dict[tuple[str, str], int] = {}
        self._tool_counts_lock = threading.Lock()
        meter.create_observable_counter(
            f.M_TOOL_CALLS, [self._observe_tool_calls], unit="{call}",
            description="tools/call requests by tool and outcome")
        #: The per-request histograms when aggregated here (see `_histograms`), else empty.
        self.histograms: list[FastHistogram] = []
        self._fast_tool: FastHistogram | None = None
        self._fast_operation: FastHistogram | None = None
        if fast_histograms:
            self._fast_tool = FastHistogram(
                f.M_TOOL_DURATION, "s", "tools/call duration by tool and outcome", TOOL_DURATION_BUCKETS,
                prometheus_name=f.M_TOOL_DURATION)
            self._fast_operation = FastHistogram(
                f.M_OPERATION_DURATION, "s",
                "MCP request duration as observed on the server (semantic conventions)", SEMCONV_DURATION_BUCKETS,
                prometheus_name="mcp_server_operation_duration_seconds")
            self.histograms = [self._fast_tool, self._fast_operation]
        else:
            self.tool_duration = meter.create_histogram(
                f.M_TOOL_DURATION, unit="s", description="tools/call duration by tool and outcome",
                explicit_bucket_boundaries_advisory=list(TOOL_DURATION_BUCKETS))
        self.downstream_errors = meter.create_counter(
            f.M_DOWNSTREAM_ERRORS, unit="{error}", description="failed calls to a dependency, by service")
        if not fast_histograms:
            self.operation_duration = meter.create_histogram(
                f.M_OPERATION_DURATION, unit="s",
                description="MCP request duration as observed on the server (semantic conventions)",
                explicit_bucket_boundaries_advisory=list(SEMCONV_DURATION_BUCKETS))
        self.session_duration = meter.create_histogram(
            f.M_SESSION_DURATION, unit="s",
            description="MCP session duration as observed on the server (semantic conventions)",
            explicit_bucket_boundaries_advisory=list(SEMCONV_DURATION_BUCKETS))
        self._tool_attrs: dict[tuple[str, str], Mapping[str, str | bool]] = {}
        self._services: set[str] = set()
        self._drop_sources: list[Callable[[], Mapping[tuple[str, str], int]]] = []
        # Per-caller calls and suspected loops: counted like the tool calls, read at collection.
        self._caller_counts: dict[tuple[str, str], int] = {}
        self._loop_counts: dict[str, int] = {}
        #: Decides which calls look like an agent loop; `mcptrace serve` sets its own from the config.
        self.loops = RepeatWatch()
        meter.create_observable_counter(
            f.M_CALLER_TOOL_CALLS, [self._observe_caller_calls], unit="{call}",
            description="tools/call requests by caller and outcome")
        meter.create_observable_counter(
            f.M_LOOP_SUSPECTED_CALLS, [self._observe_loops], unit="{call}",
            description="tools/call requests repeating one caller's identical call (same tool, arguments "
                        "and answer) at a loop's rate")

    def record_tool_call(
        self, tool: str, status: str, duration_s: float, *, caller: str | None = None,
        repeat: Hashable | None = None,
    ) -> None:
        """Count one tools/call; `caller` is its (bounded) caller label, `repeat` its key for the loop watch.

        `repeat` identifies the call and its answer (caller, tool, arguments, result): given for
        successful calls only.
        """
        key = (tool, status)
        attrs = self._tool_attrs.get(key)
        if attrs is None:  # one dict per (tool, status): no allocation on the hot path
            if len(self._tool_attrs) >= MAX_TOOL_SERIES:  # unknown tool names a client made up
                key = _OVERFLOW
                attrs = _OVERFLOW_ATTRS
            else:
                attrs = self._tool_attrs.setdefault(key, {f.L_TOOL: tool, f.L_STATUS: status})
                self.start_tool_series((tool,))
        with self._tool_counts_lock:
            self._tool_counts[key] = self._tool_counts.get(key, 0) + 1
            if caller is not None:
                by_caller = (caller, status)
                n = self._caller_counts.get(by_caller)
                if n is None:
                    for outcome in _OUTCOMES:
                        self._caller_counts.setdefault((caller, outcome), 0)
                    n = 0
                self._caller_counts[by_caller] = n + 1
            if repeat is not None and self.loops.seen(repeat):
                self._loop_counts[key[0]] = self._loop_counts.get(key[0], 0) + 1
        if self._fast_tool is not None:
            self._fast_tool.record(duration_s, key, attrs)
        else:
            self.tool_duration.record(duration_s, attrs)

    def start_tool_series(self, tools: Iterable[str]) -> None:
        """Report these tools' counters from 0 (both outcomes, and loops) before their first call.

        A series that appears with a count already in it hides that count from `rate()` and
        `increase()`: the first errors of a tool, or a loop shorter than a scrape interval,
        would never reach an alert. Called for every registered tool once they are known, and
        for any tool at its first call.
        """
        with self._tool_counts_lock:
            for tool in tools:
                if len(self._tool_attrs) >= MAX_TOOL_SERIES:
                    return
                for outcome in _OUTCOMES:
                    self._tool_attrs.setdefault((tool, outcome), {f.L_TOOL: tool, f.L_STATUS: outcome})
                    self._tool_counts.setdefault((tool, outcome), 0)
                self._loop_counts.setdefault(tool, 0)

    def _observe_tool_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._tool_counts_lock:
            counts = list(self._tool_counts.items())
        return [Observation(n, self._tool_attrs.get(key, _OVERFLOW_ATTRS)) for key, n in counts]

    def _observe_caller_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._tool_counts_lock:
            counts = list(self._caller_counts.items())
        return [Observation(n, {f.L_CALLER: caller, f.L_STATUS: status}) for (caller, status), n in counts]

    def _observe_loops(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._tool_counts_lock:
            counts = list(self._loop_counts.items())
        return [Observation(n, {f.L_TOOL: tool} if tool else _OVERFLOW_ATTRS) for tool, n in counts]

    def record_operation(self, attributes: Mapping[str, str], duration_s: float, key: Hashable = None) -> None:
        """One request's duration; `key` names `attributes` (the same key, the same dict), else they are hashed."""
        if self._fast_operation is not None:
            self._fast_operation.record(duration_s, key if key is not None else frozenset(attributes.items()),
                                        attributes)
        else:
            self.operation_duration.record(duration_s, attributes)

    def record_session(self, duration_s: float, attributes: Mapping[str, str]) -> None:
        self.session_duration.record(duration_s, attributes)

    def record_downstream_error(self, service: str) -> None:
        self.downstream_errors.add(1, {f.L_SERVICE: service})

    def dependency(self, service: str) -> None:
        """Report `service`'s error counter from 0, before its first error (once per service).

        Called for the dependencies a server declares at start and for any at its first
        call: `rate()` and `increase()` then see the first error. Service names come from
        the code (`downstream("name")`), never from clients.
        """
        if service in self._services or len(self._services) >= MAX_SERVICES:
            return
        self._services.add(service)
        self.downstream_errors.add(0, {f.L_SERVICE: service})

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
        """Report telemetry lost by one more source (exporters, the log sink), keyed by (signal, reason).

        All sources feed the one `mcptrace_telemetry_dropped_total` counter; a (signal, reason)
        pair reported by two sources is summed, and the usual kinds are reported from 0.
        """
        self._drop_sources.append(dropped)
        if len(self._drop_sources) > 1:
            return

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            totals = dict.fromkeys(DROP_KINDS, 0)
            for source in self._drop_sources:
                try:
                    for key, n in source().items():
                        totals[key] = totals.get(key, 0) + n
                except Exception:
                    pass
            return [Observation(n, {f.L_SIGNAL: signal, f.L_REASON: reason})
                    for (signal, reason), n in totals.items()]

        self.meter.create_observable_counter(
            f.M_TELEMETRY_DROPPED, [callback], unit="{item}",
            description="spans and log records that were dropped: not exported, or not written to the log")

    def observe_max_sessions(self, limit: int) -> None:
        """Report the session cap as `mcptrace_max_sessions`, to compare `mcp_active_sessions` with."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(limit)]

        self.meter.create_observable_gauge(
            f.M_MAX_SESSIONS, [callback], unit="{session}",
            description="open MCP sessions allowed at most; one more is refused with 503")

    def observe_refusals(self, refusals: Callable[[], Mapping[str, int]]) -> None:
        """Report requests the guards refused, by reason (every reason of the log contract, from 0)."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            counts = dict.fromkeys(REFUSAL_REASONS, 0)
            counts.update(refusals())
            return [Observation(n, {f.L_REASON: reason}) for reason, n in counts.items()]

        self.meter.create_observable_counter(
            f.M_REQUESTS_REFUSED, [callback], unit="{request}",
            description="requests a guard answered instead of the server, by refusal reason")

    def observe_suspensions(self, count: Callable[[], int]) -> None:
        """Report `count()`, the callers suspended so far (each suspension once), as a counter."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(count())]

        self.meter.create_observable_counter(
            f.M_SUSPENSIONS, [callback], unit="{suspension}",
            description="callers suspended for hitting their rate limits too often")

    def observe_breaker_transitions(self, transitions: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Report circuit-breaker state changes, keyed by (dependency, new state)."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {f.L_SERVICE: service, f.L_STATE: state})
                    for (service, state), n in transitions().items()]

        self.meter.create_observable_counter(
            f.M_BREAKER_TRANSITIONS, [callback], unit="{transition}",
            description="circuit breaker state changes per dependency, by the state entered")


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


def register_guard_metrics(meter: Meter, guards: GuardCounters) -> None:
    """Publish a guard layer's counters as metrics without touching its hot path.

    Call once at start-up with the object the guards update; the values are
    read whenever metrics are collected (OTLP export or a `/metrics` scrape).
    """

    def auth(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(guards.auth_failures)]

    def limited(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(guards.rate_limited)]

    def breakers(options: CallbackOptions) -> Iterable[Observation]:
        states = guards.breaker_states
        return [Observation(state, {f.L_SERVICE: service}) for service, state in states.items()]

    meter.create_observable_counter(f.M_AUTH_FAILURES, [auth], unit="{request}",
                                    description="requests refused for missing or bad credentials")
    meter.create_observable_counter(f.M_RATE_LIMITED, [limited], unit="{request}",
                                    description="requests refused by the rate limiter")
    meter.create_observable_gauge(f.M_BREAKER_STATE, [breakers],
                                  description="circuit breaker per dependency: 0 closed, 1 half-open, 2 open")
