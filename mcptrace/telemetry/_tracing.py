"""A request's span and its downstream calls' spans, and trace ids on log lines.

mcptrace makes the SERVER span of every request itself (the SDK's own span
middleware is taken out of the chain by `instrument()`, so a request is not
traced twice). Its ids are chosen as the request starts, and there are two ways
to make the span:

- **from the record** (`RecordedSpans`, when mcptrace set up the export): during
  the request the current span is a `NonRecordingSpan` carrying the ids the span
  will get, so other instrumentations (httpx, a user's own spans) parent under it
  and the W3C context goes out to downstream calls; once the request is over, its
  record is handed to a `SpanFeed`, which builds the span off the request's path.
  Creating a span through the SDK costs about as much as the rest of the
  request's telemetry together; this costs a few microseconds.
- **live** (`LiveSpans`, when the application gave a tracer provider of its own):
  a span started through that provider's tracer and ended with the same
  attributes, status and events, for its processors to handle as they do.

Every `downstream(...)` call is a CLIENT span beneath the current span, made the
same way as its request's. The ids of the current span go on every log line
(`add_trace_ids`), so a log search and a trace view land on the same request.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from mcptrace import _fields as f
from mcptrace.telemetry._context import CallContext, current_call
from mcptrace.telemetry._metrics import ServerMetrics
from mcptrace.telemetry._spanwire import (
    exception_attributes,
    network_transport,
    server_span_attributes,
    server_span_name,
)

if TYPE_CHECKING:
    from mcptrace.telemetry._spanfeed import SpanFeed

TRACER_NAME = "mcptrace"
TRACEPARENT = "traceparent"

_getrandbits = random.getrandbits
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED_FLAGS = TraceFlags(TraceFlags.DEFAULT)
_SAMPLED_DECISIONS = (Decision.RECORD_AND_SAMPLE,)


def incoming_context(meta: Mapping[str, Any] | None, headers: Mapping[str, str] | None) -> Context | None:
    """The caller's context: from `params._meta`, else from the HTTP headers; None when neither has a valid one.

    `_meta` wins when both are present, as the SDK decides for its own span.
    Parsed with the global propagators, so baggage comes along.
    """
    for carrier in (meta, headers):
        if not carrier or TRACEPARENT not in carrier:
            continue
        try:
            context = extract(carrier)
        except Exception:
            continue
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return None


def exception_of(exc: BaseException) -> tuple[str, str, str]:
    """(type, message, stacktrace) of an exception, as the SDK's `record_exception` names them."""
    kind = type(exc)
    module = kind.__module__
    name = f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__
    try:
        stacktrace = "".join(traceback.format_exception(exc))
    except Exception:
        stacktrace = ""
    return name, str(exc), stacktrace


class RecordedSpans:
    """SERVER spans made from request records off the request's path (see the module docstring).

    `feed` receives the record of every sampled request once it is over; without
    one, requests still get ids (on their log lines, and in the W3C context sent
    downstream), but nothing is exported. `sampler` decides as the SDK's tracer
    would (`OTEL_TRACES_SAMPLER`); by default a request is sampled when its caller's
    trace is, or when it starts a trace.
    """

    def __init__(self, feed: SpanFeed | None, sampler: Sampler | None = None) -> None:
        self.feed = feed
        self.sampler = sampler

    def start(self, call: CallContext, parent: Context | None) -> object:
        """Choose the span's ids and make it the current span; returns what `finish` needs.

        With nothing to export, no span is made: the caller's context (if it sent
        one) stays current, so downstream calls continue the caller's trace, and
        the request's line names that trace.
        """
        parent_context = trace.get_current_span(parent).get_span_context()
        if self.feed is None:
            if parent_context.is_valid:
                call.trace_id = parent_context.trace_id
            return otel_context.attach(parent) if parent is not None else None
        if parent_context.is_valid:
            trace_id = parent_context.trace_id
            call.parent_span_id = parent_context.span_id
            call.parent_remote = parent_context.is_remote
            state = parent_context.trace_state
            sampled = parent_context.trace_flags.sampled
        else:
            trace_id = _getrandbits(128) or 1
            state = None
            sampled = True
        if self.sampler is not None:
            result = self.sampler.should_sample(parent, trace_id, server_span_name(call), SpanKind.SERVER)
            sampled = result.decision in _SAMPLED_DECISIONS
            state = result.trace_state or state
        call.trace_id = trace_id
        call.span_id = span_id = _getrandbits(64) or 1
        call.trace_state = state
        call.sampled = sampled
        if sampled:
            call.traced = True
            call.client_spans = []
        context = SpanContext(trace_id, span_id, False, _SAMPLED if sampled else _NOT_SAMPLED_FLAGS, state)
        call.start_ns = time.time_ns()
        return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(context), parent))

    def finish(self, call: CallContext, token: object) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        if call.traced and self.feed is not None:
            self.feed.put(call)


class LiveSpans:
    """SERVER spans started and ended through a tracer the application provided."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def start(self, call: CallContext, parent: Context | None) -> object:
        call.start_ns = time.time_ns()
        span = self.tracer.start_span(server_span_name(call), parent, SpanKind.SERVER, start_time=call.start_ns)
        context = span.get_span_context()
        call.trace_id, call.span_id, call.trace_state = context.trace_id, context.span_id, context.trace_state
        call.sampled = context.trace_flags.sampled
        parent_context = trace.get_current_span(parent).get_span_context()
        if parent_context.is_valid:
            call.parent_span_id, call.parent_remote = parent_context.span_id, parent_context.is_remote
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    def finish(self, call: CallContext, token: object) -> None:
        span: trace.Span
        attached: object
        span, attached = token  # type: ignore[misc]
        otel_context.detach(attached)  # type: ignore[arg-type]
        try:
            if span.is_recording():
                span.set_attributes(server_span_attributes(call, network_transport(call.transport)))
                if call.status == f.FAILURE:
                    exception = call.exception or (call.error_type or "error", call.error or "", "")
                    span.add_event(f.EVENT_EXCEPTION, exception_attributes(exception))
                    span.set_status(Status(StatusCode.ERROR, call.error))
        finally:
            span.end(call.start_ns + int(call.duration_s * 1e9))


#: The last span's ids and their hex forms: a request writes several lines under one span.
_last_ids: tuple[int, int, str, str] = (0, 0, "", "")


def add_trace_ids(record: MutableMapping[str, Any]) -> None:
    """Log processor: `trace_id` and `span_id` (W3C hex) of the active span, when there is one."""
    global _last_ids
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        last = _last_ids
        if last[0] != context.trace_id or last[1] != context.span_id:
            last = _last_ids = (context.trace_id, context.span_id,
                                format(context.trace_id, "032x"), format(context.span_id, "016x"))
        record[f.TRACE_ID] = last[2]
        record[f.SPAN_ID] = last[3]


class DownstreamSpans:
    """`downstream_wrappers` factory: a CLIENT span per dependency call, named after the service.

    Inside a request traced from its record, the span is recorded into the
    record (`client_spans`); anywhere else it is started through `tracer`.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def __call__(self, service: str, query_hash: str | None) -> AbstractContextManager[Any]:
        call = current_call()
        if call is not None and call.client_spans is not None:
            return _RecordedClientSpan(call, service, query_hash)
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            # The trace was sampled out: its CLIENT span would not be recorded or exported either
            # (parent-based and trace-id-ratio samplers decide the same way for every span of a trace).
            return _NOT_SAMPLED
        attributes: dict[str, str] = {f.ATTR_PEER_SERVICE: service}
        if query_hash is not None:
            attributes[f.ATTR_QUERY_HASH] = query_hash
        return _CurrentSpan(self.tracer, service, attributes)


_NOT_SAMPLED = nullcontext()


class _RecordedClientSpan:
    """A CLIENT span kept in its request's record: ids now, the span itself built with the request's."""

    __slots__ = ("_call", "_parent_id", "_query_hash", "_service", "_span_id", "_start", "_token")

    def __init__(self, call: CallContext, service: str, query_hash: str | None) -> None:
        self._call = call
        self._service = service
        self._query_hash = query_hash

    def __enter__(self) -> None:
        call = self._call
        parent = trace.get_current_span().get_span_context()
        self._parent_id = parent.span_id if parent.is_valid else call.span_id
        self._span_id = span_id = _getrandbits(64) or 1
        context = SpanContext(call.trace_id, span_id, False, _SAMPLED, call.trace_state)
        self._token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(context)))
        self._start = time.time_ns()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        end = time.time_ns()
        otel_context.detach(self._token)
        call = self._call
        record = call.downstream_calls[-1] if call.downstream_calls else None
        error = record.get(f.ERROR) if record is not None and record.get(f.SERVICE) == self._service else None
        exception = None
        if isinstance(exc, Exception):
            exception = exception_of(exc)
            error = error or f"{type(exc).__name__}: {exc}"
        if call.client_spans is not None:
            call.client_spans.append(
                (self._span_id, self._parent_id, self._service, self._query_hash, self._start, end, error, exception))


class _CurrentSpan:
    """`tracer.start_as_current_span(name, kind=CLIENT)` as a plain class.

    Same span, same context, same handling of an exception (recorded, status
    ERROR), without the three generator-based context managers the API nests
    for it: this runs once per dependency call.
    """

    __slots__ = ("_attributes", "_name", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, name: str, attributes: dict[str, str]) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes

    def __enter__(self) -> trace.Span:
        span = self._span = self._tracer.start_span(self._name, kind=SpanKind.CLIENT, attributes=self._attributes)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        try:
            otel_context.detach(self._token)
            if isinstance(exc, Exception) and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            span.end()


class DownstreamErrors:
    """`downstream_hooks` hook: counts failed dependency calls and marks a live CLIENT span as failed.

    Runs while the call's CLIENT span is still current, so an error that the tool
    handled (`call.fail(...)`, nothing raised) still shows as an error in the trace.
    """

    def __init__(self, metrics: ServerMetrics | None) -> None:
        self.metrics = metrics

    def __call__(self, service: str, query_hash: str | None, duration_ms: float, error: str | None) -> None:
        if self.metrics is not None:
            self.metrics.dependency(service)
        if error is None:
            return
        if self.metrics is not None:
            self.metrics.record_downstream_error(service)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(f.ATTR_DOWNSTREAM_ERROR, error)
            span.set_attribute(f.ATTR_ERROR_TYPE, error.split(":", 1)[0])
            span.set_status(Status(StatusCode.ERROR, error))
