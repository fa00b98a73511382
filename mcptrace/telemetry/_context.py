"""The call in progress: one compact record per request, and the downstream calls it made.

A `CallContext` lives in a contextvar for the duration of one JSON-RPC
request. It is the request's whole record: who called what, when, with which
trace and span ids, and how it ended. The request log writes its one line from
it, and hands it on for the metrics and for the span that is built from it off
the request's path (`telemetry/_spanfeed.py`). Tools (ours or a user's) record
their dependencies with `downstream(...)`, which adds a sub-record per call.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcptrace import _fields as f
from mcptrace._hashing import text_hash


class CallContext:
    """One request's record (see the module docstring); every field but `request_id` may stay None."""

    __slots__ = (
        "arguments_hash", "baggage", "caller_id", "client_name", "client_parent_span_id", "client_spans",
        "client_trace_id", "client_version", "downstream_calls", "duration_s", "error", "error_code",
        "error_type", "exception", "fields", "input_token_count", "jsonrpc_id", "method", "parent_remote",
        "parent_span_id", "prompt_name", "protocol_version", "request_id", "result_hash", "sampled", "session_id",
        "span_id", "start_ns", "status", "tenant", "tool_name", "trace_id", "trace_state", "traced", "transport",
    )

    def __init__(
        self,
        request_id: str,
        method: str | None = None,
        session_id: str | None = None,
        jsonrpc_id: str | None = None,
        tool_name: str | None = None,
        caller_id: str | None = None,
        tenant: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.method = method
        self.session_id = session_id
        self.jsonrpc_id = jsonrpc_id
        self.tool_name = tool_name
        self.caller_id = caller_id
        self.tenant = tenant
        self.transport: str | None = None
        #: The prompt a `prompts/get` names (its span's target, as a tool is for `tools/call`).
        self.prompt_name: str | None = None
        self.protocol_version: str | None = None
        self.client_name: str | None = None
        self.client_version: str | None = None
        #: The W3C trace context the client sent in `_meta`, as logged (hex), and its baggage.
        self.client_trace_id: str | None = None
        self.client_parent_span_id: str | None = None
        self.baggage: list[dict[str, str]] | None = None
        #: The request's own span: ids chosen when it starts, so children made meanwhile point at it.
        self.trace_id = 0
        self.span_id = 0
        self.parent_span_id: int | None = None
        self.parent_remote = False
        self.trace_state: Any = None
        #: Whether its span is exported (the sampler's decision), and whether any span is made of it.
        self.sampled = False
        self.traced = False
        self.start_ns = 0
        self.duration_s = 0.0
        self.status: str | None = None
        self.error: str | None = None
        self.error_code: int | None = None
        #: `error.type` of a failed request: a JSON-RPC code, an exception class, or `tool_error`.
        self.error_type: str | None = None
        #: (type, message, stacktrace) of an exception the request ended with, for the span's event.
        self.exception: tuple[str, str, str] | None = None
        self.input_token_count: int | None = None
        self.arguments_hash: str | None = None
        self.result_hash: str | None = None
        self.downstream_calls: list[dict[str, Any]] = []
        #: One tuple per downstream call of a traced request, for its CLIENT span (see `_tracing`).
        self.client_spans: list[tuple[Any, ...]] | None = None
        self.fields: dict[str, Any] | None = None

    def log_fields(self) -> dict[str, Any]:
        """What every other line written during the request carries (a `downstream_call`, a tool's own
        lines): the request's ids, caller and client. Built once, at the first such line."""
        fields = self.fields
        if fields is None:
            fields = self.fields = {
                f.REQUEST_ID: self.request_id, f.SESSION_ID: self.session_id, f.JSONRPC_ID: self.jsonrpc_id,
                f.METHOD: self.method, f.CALLER_ID: self.caller_id, f.TENANT: self.tenant,
                f.TRANSPORT: self.transport,
            }
            if self.tool_name is not None:
                fields[f.TOOL_NAME] = self.tool_name
            fields[f.PROTOCOL_VERSION] = self.protocol_version
            fields[f.CLIENT_NAME] = self.client_name
            fields[f.CLIENT_VERSION] = self.client_version
            if self.client_parent_span_id is not None:
                fields[f.PARENT_SPAN_ID] = self.client_parent_span_id
            if self.baggage is not None:
                fields[f.BAGGAGE] = self.baggage
        return fields


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("mcptrace_call", default=None)


def current_call() -> CallContext | None:
    return _current.get()


def set_call(call: CallContext | None) -> contextvars.Token[CallContext | None]:
    return _current.set(call)


def reset_call(token: contextvars.Token[CallContext | None]) -> None:
    _current.reset(token)


class DownstreamCall:
    """Handle yielded by `downstream()`; `fail()` marks an error that was handled, not raised."""

    def __init__(self, service: str, query_hash: str | None) -> None:
        self.service = service
        self.query_hash = query_hash
        self.error: str | None = None

    def fail(self, error: str) -> None:
        self.error = error


#: Called as hook(service, query_hash, duration_ms, error) after every downstream call.
DownstreamHook = Callable[[str, str | None, float, str | None], None]
downstream_hooks: list[DownstreamHook] = []
#: Context managers entered around each downstream call (spans): factory(service, query_hash).
downstream_wrappers: list[Callable[[str, str | None], Any]] = []


@asynccontextmanager
async def downstream(service: str, query: str | None = None) -> AsyncIterator[DownstreamCall]:
    """Record one call to a dependency: timing, outcome and a hash of the query.

    The record joins the current request's `tool_call` line (and, under
    `mcptrace serve`, is logged as its own `downstream_call` line). The query
    text itself is never logged.
    """
    call = DownstreamCall(service, text_hash(query) if query is not None else None)
    wrappers = [w(service, call.query_hash) for w in downstream_wrappers]
    for w in wrappers:
        w.__enter__()
    start = time.perf_counter()
    exc_info: tuple[Any, Any, Any] = (None, None, None)
    try:
        yield call
    except BaseException as exc:
        call.error = call.error or f"{type(exc).__name__}: {exc}"[:500]
        exc_info = (type(exc), exc, exc.__traceback__)
        raise
    finally:
        duration_ms = round((time.perf_counter() - start) * 1000, 3)
        record = {
            f.SERVICE: service,
            f.QUERY_HASH: call.query_hash,
            f.DURATION_MS: duration_ms,
            f.STATUS: f.FAILURE if call.error else f.SUCCESS,
            f.ERROR: call.error,
        }
        ctx = _current.get()
        if ctx is not None:
            ctx.downstream_calls.append(record)
        for hook in downstream_hooks:
            try:
                hook(service, call.query_hash, duration_ms, call.error)
            except Exception:
                pass
        for w in reversed(wrappers):
            try:
                w.__exit__(*exc_info)
            except Exception:
                pass
