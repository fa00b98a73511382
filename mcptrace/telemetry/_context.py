"""The call in progress: who is calling what, and the downstream calls it made.

A `CallContext` lives in a contextvar for the duration of one JSON-RPC request.
Tools (ours or a user's) record their dependencies with `downstream(...)`; the
request middleware reads the list back into the `tool_call` line.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from mcptrace import _fields as f
from mcptrace._hashing import text_hash


@dataclass
class CallContext:
    request_id: str
    method: str | None = None
    session_id: str | None = None
    jsonrpc_id: str | None = None
    tool_name: str | None = None
    caller_id: str | None = None
    tenant: str | None = None
    downstream_calls: list[dict[str, Any]] = field(default_factory=list)
    #: Hashes of a tool call's arguments and answer, once its `tool_call` line has them.
    arguments_hash: str | None = None
    result_hash: str | None = None


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

    The record joins the current request's `tool_call` line and is logged as its
    own `downstream_call` line. The query text itself is never logged.
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
