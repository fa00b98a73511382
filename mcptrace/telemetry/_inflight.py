"""Requests still running, written down once they have run for a moment: the evidence a crash leaves.

A request is logged in one line when it ends. A request that is still running
when the process dies would then leave nothing behind, so every request is kept
here while it runs (a dict insert and delete, a fraction of a microsecond), and
the log writer's background thread, every `flush_interval` (0.2 s), writes a
`request_received` line for each one that has been running for `after` seconds
(0.2 s by default) and has none yet. The line carries the request's record as
known at its start, with the time it started as its `timestamp`. Quick requests,
almost all of them, never get one: their own line follows within milliseconds.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from mcptrace import _fields as f
from mcptrace.telemetry._context import CallContext
from mcptrace.telemetry._log import EventLogger
from mcptrace.telemetry._logline import utc_timestamp

#: Seconds a request runs before it is written down as `request_received`.
DEFAULT_AFTER = 0.2


class InFlight:
    """The requests of one request log that are running now (see the module docstring)."""

    def __init__(self, logger: EventLogger, *, after: float = DEFAULT_AFTER) -> None:
        self.logger = logger
        self.after = after
        #: id(record) -> (record, monotonic start, written down yet)
        self._running: dict[int, list[Any]] = {}
        logger.sink.on_tick(self.sweep)

    def add(self, call: CallContext) -> None:
        self._running[id(call)] = [call, time.monotonic(), False]

    def discard(self, call: CallContext) -> None:
        self._running.pop(id(call), None)

    def __len__(self) -> int:
        return len(self._running)

    def sweep(self) -> None:
        """Write `request_received` for every request running for `after` seconds without one yet."""
        now = time.monotonic()
        wall = time.time()
        for entry in list(self._running.values()):
            call, started, written = entry
            if written or now - started < self.after:
                continue
            entry[2] = True
            line = {
                f.TIMESTAMP: utc_timestamp(wall - (now - started)), f.LEVEL: "info", f.EVENT: f.EV_REQUEST_RECEIVED,
                f.REQUEST_ID: call.request_id, f.SESSION_ID: call.session_id, f.JSONRPC_ID: call.jsonrpc_id,
                f.METHOD: call.method, f.CALLER_ID: call.caller_id, f.TENANT: call.tenant,
                f.TRANSPORT: call.transport, f.TOOL_NAME: call.tool_name, f.PROTOCOL_VERSION: call.protocol_version,
                f.CLIENT_NAME: call.client_name, f.CLIENT_VERSION: call.client_version,
            }
            if call.trace_id:
                line[f.TRACE_ID] = format(call.trace_id, "032x")
            if call.span_id:
                line[f.SPAN_ID] = format(call.span_id, "016x")
            contextvars.Context().run(self.logger.write_record, {k: v for k, v in line.items() if v is not None
                                                                   or k == f.REQUEST_ID})
