"""Finished spans as plain tuples, in length-prefixed pickle frames, for the export child process.

The server process runs `span_rows()` under the interpreter lock, so it copies
only what the OTLP encoder reads, as builtins that pickle in C; the child
rebuilds `ReadableSpan` objects with `Rebuilder` and hands them to the SDK's
own exporter, which does all the OTLP encoding. A frame is a 4-byte big-endian
length and a pickled `SPANS` message. A resource goes to a child once, in the
first message with a span of it; later rows name it by index. Both ends are
the same checkout of mcptrace.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

SPANS = "spans"
_LENGTH = struct.Struct(">I")
#: A frame larger than this is refused by the reader: the writer never makes one (a batch is 64 spans).
MAX_FRAME = 256 * 1024 * 1024


def frame(message: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def read_frame(stream: IO[bytes]) -> tuple[Any, ...] | None:
    """The next message, or None at a clean end of stream; `EOFError` if it ends mid-frame."""
    head = stream.read(_LENGTH.size)
    if not head:
        return None
    if len(head) < _LENGTH.size:
        raise EOFError("the stream ended inside a frame header")
    (size,) = _LENGTH.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes is larger than {MAX_FRAME}")
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("the stream ended inside a frame")
    message = pickle.loads(payload)  # noqa: S301 (written by our own parent process)
    if not isinstance(message, tuple) or not message:
        raise ValueError("a frame that is not a message")
    return message


def _attributes(mapping: Any) -> tuple[dict[str, Any] | None, int]:
    """A plain dict of an SDK attribute mapping (read without copying where it can be), and its drops."""
    if mapping is None:
        return None, 0
    inner = getattr(mapping, "_dict", None)
    if inner is not None:
        return inner, mapping.dropped
    return dict(mapping), 0


def span_rows(spans: Sequence[ReadableSpan], resources: dict[int, tuple[int, Resource]]) -> tuple[Any, ...]:
    """One `SPANS` message: resources new to the child, a table of instrumentation scopes, a row per span.

    `resources` holds the resources this child has been sent (by `id()`, with
    the object, so that the id stays its own) and is updated.

    The rows are built from the spans' private fields: a finished span never
    changes, and the public properties copy every mapping and sequence again.
    The pickle is taken right after, before any span could be garbage.
    """
    scopes: dict[int, int] = {}
    scope_rows: list[tuple[Any, ...] | None] = []
    new_resources = []
    rows = []
    for span in spans:
        resource = span._resource
        known = resources.get(id(resource))
        if known is None:
            known = resources[id(resource)] = (len(resources), resource)
            new_resources.append((known[0], dict(resource.attributes), resource.schema_url))
        scope = span._instrumentation_scope
        index = scopes.get(id(scope))
        if index is None:
            index = scopes[id(scope)] = len(scope_rows)
            scope_rows.append(None if scope is None else (
                scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})))
        context = span._context
        if context is None:
            continue  # not a recorded span: nothing an OTLP receiver could take
        parent = span._parent
        attributes, dropped = _attributes(span._attributes)
        status = span._status
        events = span._events
        links = span._links
        rows.append((
            span._name,
            context.trace_id,
            context.span_id,
            int(context.trace_flags),
            tuple(context.trace_state.items()) if context.trace_state else None,
            None if parent is None else (parent.span_id, parent.is_remote),
            span._kind.value,
            span._start_time,
            span._end_time,
            attributes,
            dropped,
            status.status_code.value,
            status.description,
            tuple(_event_row(e) for e in events) if events else None,
            getattr(events, "dropped", 0),
            tuple(_link_row(k) for k in links) if links else None,
            getattr(links, "dropped", 0),
            index,
            known[0],
        ))
    return (SPANS, new_resources, scope_rows, rows)


def _event_row(event: Event) -> tuple[Any, ...]:
    attributes, dropped = _attributes(event._attributes)
    return (event.name, event.timestamp, attributes, dropped)


def _link_row(link: Link) -> tuple[Any, ...]:
    context = link.context
    attributes, dropped = _attributes(link._attributes)
    return (context.trace_id, context.span_id, context.is_remote, int(context.trace_flags),
            tuple(context.trace_state.items()) if context.trace_state else None, attributes, dropped)


# -- the child's side ------------------------------------------------------------

def _bounded(attributes: dict[str, Any] | None, dropped: int) -> Any:
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes, immutable=False)
    bounded.dropped = dropped
    return bounded


def _bounded_list(items: list[Any], dropped: int) -> Any:
    if not dropped:
        return items
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded


def _trace_state(items: tuple[tuple[str, str], ...] | None) -> TraceState | None:
    return TraceState(list(items)) if items else None


class Rebuilder:
    """The child's side: `ReadableSpan`s equal, for the OTLP encoder, to the ones `span_rows()` was given."""

    def __init__(self) -> None:
        self.resources: dict[int, Resource] = {}

    def spans(self, message: tuple[Any, ...]) -> list[ReadableSpan]:
        from mcptrace.telemetry._otlp import hashed_resource

        _, new_resources, scope_rows, rows = message
        for index, attributes, schema_url in new_resources:
            self.resources[index] = hashed_resource(attributes, schema_url)
        scopes = [None if s is None else InstrumentationScope(s[0], s[1], s[2], s[3] or None)
                  for s in scope_rows]
        return [self._span(row, scopes) for row in rows]

    def _span(self, row: tuple[Any, ...], scopes: list[InstrumentationScope | None]) -> ReadableSpan:
        (name, trace_id, span_id, flags, state, parent, kind, start, end, attributes, dropped, code,
         description, events, dropped_events, links, dropped_links, scope, resource) = row
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags),
                              trace_state=_trace_state(state))
        parent_context = None
        if parent is not None:
            parent_context = SpanContext(trace_id, parent[0], is_remote=parent[1])
        status_code = StatusCode(code)
        event_list = [Event(e[0], _bounded(e[2], e[3]), e[1]) for e in events or ()]
        link_list = [
            Link(SpanContext(k[0], k[1], is_remote=k[2], trace_flags=TraceFlags(k[3]),
                             trace_state=_trace_state(k[4])), _bounded(k[5], k[6]))
            for k in links or ()]
        return ReadableSpan(
            name,
            context=context,
            parent=parent_context,
            resource=self.resources[resource],
            attributes=_bounded(attributes, dropped),
            events=_bounded_list(event_list, dropped_events),
            links=_bounded_list(link_list, dropped_links),
            kind=SpanKind(kind),
            status=Status(status_code, description if status_code is StatusCode.ERROR else None),
            start_time=start,
            end_time=end,
            instrumentation_scope=scopes[scope],
        )
