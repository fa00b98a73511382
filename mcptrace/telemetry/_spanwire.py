"""Spans as plain tuples: built from request records or read from finished spans, rebuilt as `ReadableSpan`.

A row holds what the OTLP encoder reads of one span, as builtins that pickle in
C. Rows come from two places: a request's record (`record_rows`: its SERVER span
and a CLIENT span per downstream call, with the ids chosen while it ran), and
any other finished span, read through `ReadableSpan`'s public properties
(`span_row`). `Rebuilder` turns rows back into `ReadableSpan` objects, with the
SDK's public constructor, for the SDK's own OTLP exporter to encode; it runs in
the export child (`_spanchild`) or on the export thread. A frame is a 4-byte
big-endian length and a pickled `SPANS` message; a resource goes to a child
once, in the first message with a span of it, and later rows name it by index.
Both ends are the same checkout of mcptrace.
"""

from __future__ import annotations

import operator
import pickle
import struct
from collections.abc import Iterable
from typing import IO, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from mcptrace import _fields as f
from mcptrace._version import __version__
from mcptrace.telemetry._context import CallContext
from mcptrace.telemetry._resource import hashed_resource

SPANS = "spans"
_LENGTH = struct.Struct(">I")
#: A frame larger than this is refused by the reader: the writer never makes one (a batch is a few hundred spans).
MAX_FRAME = 256 * 1024 * 1024

_SERVER = SpanKind.SERVER.value
_CLIENT = SpanKind.CLIENT.value
_ERROR = StatusCode.ERROR.value
_UNSET = StatusCode.UNSET.value
_SAMPLED = int(TraceFlags.SAMPLED)

Row = tuple[Any, ...]
#: What a span feed carries: a traced request's record, or any other finished span.
Item = CallContext | ReadableSpan

#: The instrumentation scope of the spans mcptrace makes.
SCOPE = InstrumentationScope("mcptrace", __version__)


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


class Batch:
    """One `SPANS` message being built: resources new to its reader, a table of scopes, the rows.

    `resources` holds the resources the reader has been sent (by `id()`, with
    the object, so that the id stays its own) and is updated as rows name new ones.
    """

    def __init__(self, resources: dict[int, tuple[int, Resource]]) -> None:
        self._resources = resources
        self._new_resources: list[tuple[int, dict[str, Any], str | None]] = []
        self._scopes: dict[int, int] = {}
        self._scope_rows: list[tuple[Any, ...] | None] = []
        self.rows: list[Row] = []
        #: Request records, as `record_tuple`s, with the indexes of their resource and scope: their
        #: spans are built where the message is read, not where it is written.
        self.records: list[tuple[Any, ...]] = []
        self.record_context: tuple[int, int] = (0, 0)

    def resource(self, resource: Resource) -> int:
        known = self._resources.get(id(resource))
        if known is None:
            known = self._resources[id(resource)] = (len(self._resources), resource)
            self._new_resources.append((known[0], dict(resource.attributes), resource.schema_url))
        return known[0]

    def scope(self, scope: InstrumentationScope | None) -> int:
        index = self._scopes.get(id(scope))
        if index is None:
            index = self._scopes[id(scope)] = len(self._scope_rows)
            self._scope_rows.append(None if scope is None else (
                scope.name, scope.version, scope.schema_url, dict(scope.attributes or {})))
        return index

    def message(self) -> tuple[Any, ...]:
        return (SPANS, self._new_resources, self._scope_rows, self.rows, self.records, self.record_context)


#: What a record's spans are built from, in this order (`record_tuple`, `record_of`).
RECORD_FIELDS = (
    "request_id", "method", "session_id", "jsonrpc_id", "tool_name", "prompt_name", "caller_id", "tenant",
    "transport", "protocol_version", "trace_id", "span_id", "parent_span_id", "parent_remote", "sampled",
    "start_ns", "duration_s", "status", "error", "error_code", "error_type", "exception", "client_spans",
)
_record_values = operator.attrgetter(*RECORD_FIELDS)


def record_tuple(call: CallContext) -> tuple[Any, ...]:
    """A record as builtins (its trace state as pairs), cheap to take and to pickle."""
    state = call.trace_state
    return (*_record_values(call), tuple(state.items()) if state else None)


def record_of(values: tuple[Any, ...]) -> CallContext:
    call = CallContext(values[0])
    for name, value in zip(RECORD_FIELDS, values, strict=False):
        setattr(call, name, value)
    call.trace_state = TraceState(list(values[-1])) if values[-1] else None
    return call


def add_items(batch: Batch, items: Iterable[Item], resource: Resource) -> int:
    """Add `items` (records carry `resource`, other spans their own); returns the spans added."""
    n = 0
    batch.record_context = (batch.resource(resource), batch.scope(SCOPE))
    for item in items:
        if isinstance(item, CallContext):
            batch.records.append(record_tuple(item))
            n += 1 + len(item.client_spans or ())
        else:
            row = span_row(item, batch)
            if row is not None:
                batch.rows.append(row)
                n += 1
    return n


def spans_in(items: Iterable[Item]) -> int:
    """How many spans `items` hold: a record's SERVER span and its CLIENT spans, or one span."""
    return sum(1 + len(item.client_spans or ()) if isinstance(item, CallContext) else 1 for item in items)


# -- rows of a request's record --------------------------------------------------

def server_span_name(call: CallContext) -> str:
    """The SERVER span's name, as the MCP semantic conventions (and the SDK) give it: method and target."""
    method = call.method or "unknown"
    target = call.tool_name if call.tool_name is not None else call.prompt_name
    return method if target is None else f"{method} {target}"


def server_span_attributes(call: CallContext, transport: str | None) -> dict[str, Any]:
    """Everything a request's SERVER span carries: the semantic-convention attributes and mcptrace's ids."""
    attributes: dict[str, Any] = {f.ATTR_METHOD: call.method}
    if call.protocol_version is not None:
        attributes[f.ATTR_PROTOCOL_VERSION] = call.protocol_version
    if call.jsonrpc_id is not None:
        attributes[f.ATTR_JSONRPC_ID] = call.jsonrpc_id
    if call.method == "tools/call":
        attributes[f.ATTR_GEN_AI_OPERATION] = "execute_tool"
        if call.tool_name is not None:
            attributes[f.ATTR_TOOL_NAME] = call.tool_name
    elif call.prompt_name is not None:
        attributes[f.ATTR_GEN_AI_PROMPT_NAME] = call.prompt_name
    if transport is not None:
        attributes[f.ATTR_NETWORK_TRANSPORT] = transport
    attributes[f.ATTR_REQUEST_ID] = call.request_id
    if call.caller_id is not None:
        attributes[f.ATTR_CALLER_ID] = call.caller_id
    if call.tenant is not None:
        attributes[f.ATTR_TENANT] = call.tenant
    if call.session_id is not None:
        attributes[f.ATTR_SESSION_ID] = call.session_id
    if call.error_type is not None:
        attributes[f.ATTR_ERROR_TYPE] = call.error_type
        if call.error_code is not None and call.error_type == str(call.error_code):  # a JSON-RPC error
            attributes[f.ATTR_RPC_STATUS_CODE] = call.error_type
    return attributes


def exception_attributes(exception: tuple[str, str, str]) -> dict[str, str]:
    """An `exception` event's attributes, as the SDK's `record_exception` writes them."""
    kind, message, stacktrace = exception
    attributes = {f.ATTR_EXCEPTION_TYPE: kind, f.ATTR_EXCEPTION_MESSAGE: message}
    if stacktrace:
        attributes[f.ATTR_EXCEPTION_STACKTRACE] = stacktrace
    attributes[f.ATTR_EXCEPTION_ESCAPED] = "False"
    return attributes


_NETWORK_TRANSPORT = {"http": "tcp", "stdio": "pipe"}


def network_transport(transport: str | None) -> str | None:
    """`network.transport` of a request served over mcptrace's `transport` (`http` is tcp, `stdio` a pipe)."""
    return _NETWORK_TRANSPORT.get(transport, transport) if transport is not None else None


def record_rows(call: CallContext, resource: int, scope: int) -> Iterable[Row]:
    """The rows of a traced request: its SERVER span, then one CLIENT span per downstream call."""
    flags = _SAMPLED if call.sampled else 0
    state = tuple(call.trace_state.items()) if call.trace_state else None
    end = call.start_ns + int(call.duration_s * 1e9)
    events = None
    if call.status == f.FAILURE:
        code, description = _ERROR, call.error
        exception = call.exception or (call.error_type or "error", call.error or "", "")
        events = ((f.EVENT_EXCEPTION, end, exception_attributes(exception), 0),)
    else:
        code, description = _UNSET, None
    parent = None if call.parent_span_id is None else (call.parent_span_id, call.parent_remote)
    attributes = server_span_attributes(call, network_transport(call.transport))
    yield (server_span_name(call), call.trace_id, call.span_id, flags, state, parent, _SERVER, call.start_ns, end,
           attributes, 0, code, description, events, 0, None, 0, scope, resource)
    for span_id, parent_id, service, query_hash, start, stop, error, exception in call.client_spans or ():
        attributes = {f.ATTR_PEER_SERVICE: service}
        if query_hash is not None:
            attributes[f.ATTR_QUERY_HASH] = query_hash
        client_events = None
        if error is not None:
            attributes[f.ATTR_DOWNSTREAM_ERROR] = error
            attributes[f.ATTR_ERROR_TYPE] = error.split(":", 1)[0]
            if exception is not None:
                client_events = ((f.EVENT_EXCEPTION, stop, exception_attributes(exception), 0),)
        yield (service, call.trace_id, span_id, flags, state, (parent_id, False), _CLIENT, start, stop,
               attributes, 0, _ERROR if error is not None else _UNSET, error, client_events, 0, None, 0, scope,
               resource)


# -- rows of any finished span, through its public properties -----------------------

def span_row(span: ReadableSpan, batch: Batch) -> Row | None:
    """A finished span's row (None for a span without a context: nothing a receiver could take)."""
    context = span.context
    if context is None:
        return None
    parent = span.parent
    status = span.status
    events = span.events
    links = span.links
    return (
        span.name, context.trace_id, context.span_id, int(context.trace_flags),
        tuple(context.trace_state.items()) if context.trace_state else None,
        None if parent is None else (parent.span_id, parent.is_remote),
        span.kind.value, span.start_time, span.end_time,
        dict(span.attributes or {}), span.dropped_attributes,
        status.status_code.value, status.description,
        tuple((e.name, e.timestamp, dict(e.attributes or {}), e.dropped_attributes) for e in events) or None,
        span.dropped_events,
        tuple(_link_row(k) for k in links) or None,
        span.dropped_links,
        batch.scope(span.instrumentation_scope),
        batch.resource(span.resource),
    )


def _link_row(link: Link) -> Row:
    context = link.context
    return (context.trace_id, context.span_id, context.is_remote, int(context.trace_flags),
            tuple(context.trace_state.items()) if context.trace_state else None, dict(link.attributes or {}),
            link.dropped_attributes)


# -- back to spans -------------------------------------------------------------------

def _attrs(attributes: dict[str, Any] | None, dropped: int) -> Any:
    if not dropped:
        return attributes
    bounded = BoundedAttributes(attributes=attributes, immutable=False)
    bounded.dropped = dropped  # what the span's limits dropped, for the encoder to report
    return bounded


def _counted(items: list[Any], dropped: int) -> Any:
    if not dropped:
        return items
    bounded = BoundedList.from_seq(None, items)
    bounded.dropped = dropped
    return bounded


def _trace_state(items: tuple[tuple[str, str], ...] | None) -> TraceState | None:
    return TraceState(list(items)) if items else None


class Rebuilder:
    """`ReadableSpan`s equal, for the OTLP encoder, to the rows of a message."""

    def __init__(self) -> None:
        self.resources: dict[int, Resource] = {}

    def spans(self, message: tuple[Any, ...]) -> list[ReadableSpan]:
        _, new_resources, scope_rows, rows, records, (resource, scope) = message
        for index, attributes, schema_url in new_resources:
            self.resources[index] = hashed_resource(attributes, schema_url)
        scopes = [None if s is None else InstrumentationScope(s[0], s[1], s[2], s[3] or None)
                  for s in scope_rows]
        spans = [self._span(row, scopes) for row in rows]
        for values in records:
            spans.extend(self._span(row, scopes) for row in record_rows(record_of(values), resource, scope))
        return spans

    def _span(self, row: Row, scopes: list[InstrumentationScope | None]) -> ReadableSpan:
        (name, trace_id, span_id, flags, state, parent, kind, start, end, attributes, dropped, code,
         description, events, dropped_events, links, dropped_links, scope, resource) = row
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags),
                              trace_state=_trace_state(state))
        parent_context = None
        if parent is not None:
            parent_context = SpanContext(trace_id, parent[0], is_remote=parent[1])
        status_code = StatusCode(code)
        event_list: Any = [Event(e[0], _attrs(e[2], e[3]), e[1]) for e in events or ()]
        link_list: Any = [
            Link(SpanContext(k[0], k[1], is_remote=k[2], trace_flags=TraceFlags(k[3]),
                             trace_state=_trace_state(k[4])), _attrs(k[5], k[6]))
            for k in links or ()]
        return ReadableSpan(
            name,
            context=context,
            parent=parent_context,
            resource=self.resources[resource],
            attributes=_attrs(attributes, dropped),
            events=_counted(event_list, dropped_events),
            links=_counted(link_list, dropped_links),
            kind=SpanKind(kind),
            status=Status(status_code, description if status_code is StatusCode.ERROR else None),
            start_time=start,
            end_time=end,
            instrumentation_scope=scopes[scope],
        )
