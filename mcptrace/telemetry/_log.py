"""Structured JSON log lines, one object per line, cheap enough for the hot path.

Records are built from four layers, later ones winning: the current request's
fields (its `CallContext`: ids, caller, client), fields bound to the current
context (`bind`), fields added by processors (trace ids, ...), and the fields
passed to `emit`. A line is serialised once with orjson and handed to
the sink (`_sink`), which writes it to the OS at the latest when the request's
response is about to leave (`commit`). Writing never raises into a request: a
sink that fails counts the line as dropped, and the log says so (`log_gap`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from mcptrace import _fields as f
from mcptrace._schema import LOG_SCHEMA_VERSION
from mcptrace.telemetry._context import current_call
from mcptrace.telemetry._logline import encode_line, utc_timestamp
from mcptrace.telemetry._sink import LogSink

__all__ = ["EventLogger", "LogSink", "bind", "bound", "null_logger", "unbind", "utc_timestamp"]

Processor = Callable[[MutableMapping[str, Any]], None]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_bound: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "mcptrace_log_fields", default={}  # noqa: B039 - never mutated: bind() sets a new dict
)


def bind(**fields: Any) -> contextvars.Token[dict[str, Any]]:
    """Add fields to every line emitted from the current context (and tasks it starts)."""
    return _bound.set({**_bound.get(), **fields})


def unbind(token: contextvars.Token[dict[str, Any]]) -> None:
    _bound.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        _bound.reset(token)


class EventLogger:
    """Emits contract-shaped JSON lines to a sink."""

    def __init__(self, sink: LogSink, *, level: str = "info", processors: list[Processor] | None = None):
        self.sink = sink
        self.min_level = _LEVELS[level]
        self.processors: list[Processor] = list(processors or [])
        #: Called with each finished record after it is written (an OTLP log bridge, ...).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        if _LEVELS.get(level, 20) < self.min_level:
            return
        record: dict[str, Any] = {f.TIMESTAMP: utc_timestamp(), f.LEVEL: level, f.EVENT: event, f.REQUEST_ID: None}
        call = current_call()
        if call is not None:
            record.update(call.log_fields())
        record.update(_bound.get())
        for processor in self.processors:
            try:
                processor(record)
            except Exception:  # a processor must never break the request
                pass
        record.update(fields)
        record[f.SCHEMA_VERSION] = LOG_SCHEMA_VERSION
        self.sink.write(encode_line(record))
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                pass

    def write_record(self, record: dict[str, Any]) -> None:
        """Write a record that already holds every field of its line (no bound fields, no processors).

        Its `timestamp` is set now when it is None; the schema version is stamped.
        """
        if _LEVELS.get(record.get(f.LEVEL, "info"), 20) < self.min_level:
            return
        if record.get(f.TIMESTAMP) is None:
            record[f.TIMESTAMP] = utc_timestamp()
        record[f.SCHEMA_VERSION] = LOG_SCHEMA_VERSION
        self.sink.write(encode_line(record))
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                pass

    def write_in_context(self, record: dict[str, Any]) -> None:
        """Write a record built elsewhere as if emitted here: the fields bound to the current context and
        the processors' (the current span's ids) are added, then it is written as by `write_record`."""
        record.update(_bound.get())
        for processor in self.processors:
            try:
                processor(record)
            except Exception:  # a processor must never break the request
                pass
        self.write_record(record)

    def commit(self) -> None:
        """Write every line emitted so far to the OS: call it just before a response leaves."""
        self.sink.commit()

    def close(self) -> None:
        self.sink.close()


_null_logger: EventLogger | None = None


def null_logger() -> EventLogger:
    """A logger that writes nowhere (counting lines): the default when none is configured."""
    global _null_logger
    if _null_logger is None:
        _null_logger = EventLogger(LogSink(None))
    return _null_logger
