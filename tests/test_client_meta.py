"""Reading the client's trace context from `_meta`: what round-trips, and what is ignored without a fuss."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mcptrace._schema import validate_record
from mcptrace.middleware._clientmeta import MAX_BAGGAGE_ENTRIES, _baggage, _traceparent

ids = st.integers(min_value=1, max_value=2**128 - 1), st.integers(min_value=1, max_value=2**64 - 1)
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=20)


@given(*ids)
def test_a_traceparent_an_opentelemetry_client_sends_is_read_back(trace_id: int, span_id: int) -> None:
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1)))
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span, Context()))
    assert _traceparent(carrier) == (format(trace_id, "032x"), format(span_id, "016x"))


@given(st.dictionaries(token, st.text(max_size=40).map(str.strip), min_size=1, max_size=10))
def test_baggage_an_opentelemetry_client_sends_is_kept_as_a_map(entries: dict[str, str]) -> None:
    context = Context()
    for key, value in entries.items():
        context = baggage.set_baggage(key, value, context)
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier, context=context)
    pairs = _baggage(carrier)
    assert pairs is not None
    assert {p["key"]: p["value"] for p in pairs} == entries
    assert not validate_record(
        {"timestamp": "t", "event": "e", "mcp_request_id": "r", "schema_version": 2, "baggage": pairs}
    )


@given(st.one_of(st.text(max_size=120), st.integers(), st.none(), st.lists(st.text(max_size=5))))
def test_anything_else_in_meta_is_ignored_without_raising(value: Any) -> None:
    meta = {"traceparent": value, "tracestate": value, "baggage": value}
    trace_id, parent = _traceparent(meta)
    assert (trace_id is None) == (parent is None)
    pairs = _baggage(meta)
    assert pairs is None or len(pairs) <= MAX_BAGGAGE_ENTRIES


def test_an_all_zero_trace_id_is_invalid_and_not_logged() -> None:
    assert _traceparent({"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}) == (None, None)


def test_a_boolean_schema_version_is_not_a_version() -> None:
    problems = validate_record(
        {"timestamp": "t", "event": "e", "mcp_request_id": "r", "schema_version": True}
    )
    assert any("schema_version" in p for p in problems)
