"""Refused requests on record: `request_refused` lines, one per caller, reason and tool per second.

Every guard that answers instead of the server (no or a bad token, a tool or a
session that is not the caller's, a rate limit, a suspension, a session cap, the
body budget) hands the refusal to `Refusals.record`. Lines are keyed by (reason,
who: the principal, else the client's address, tool, HTTP status):

- a key that was quiet for a whole interval is written **at once**, at its first
  refusal, before the refusal's answer leaves: one refused request is one line,
  on record as soon as it happened (`count` absent, meaning one);
- while refusals of the key keep coming, they are **counted** and written as one
  line per interval (default 1 s): `count`, `mcp_request_id` and `timestamp` of
  the first of them, `last_request_id` and `last_timestamp` of the last, and the
  details (error, retry hint, session) of the first;
- `close()`, at shutdown, writes what is still counted: nothing is lost to a
  clean stop. A `kill -9` loses at most the last interval's counts.

A flood of refusals thus costs two lines a second per key instead of one per
request, and recording one is a dict lookup under a lock. Keys are bounded
(`max_keys`): past the bound, refusals of new keys are counted without their
tool, so made-up tool names cannot grow the table. Lines are written from a
fresh context, so no field bound to whichever request is current leaks into them.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcptrace import _fields as f
from mcptrace.guards._stats import GuardStats
from mcptrace.telemetry._log import EventLogger, utc_timestamp

#: Longest text kept from a client-chosen value (a tool name, an error naming one).
MAX_TEXT = 200

_Key = tuple[str, str | None, str | None, int | None]


@dataclass(slots=True)
class _Window:
    """One key's current interval: when it ends, and the refusals counted in it since its first line."""

    ends: float
    count: int = 0
    first: dict[str, Any] | None = None
    first_wall: float = 0.0
    last_id: str | None = None
    last_wall: float = 0.0


class Refusals:
    """The `request_refused` writer of one server (see the module docstring)."""

    def __init__(
        self,
        logger: EventLogger,
        *,
        stats: GuardStats | None = None,
        interval: float = 1.0,
        max_keys: int = 1024,
        transport: str = "http",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        background: bool = True,
    ) -> None:
        self.logger = logger
        self.stats = stats if stats is not None else GuardStats()
        self.interval = interval
        self.max_keys = max_keys
        self.transport = transport
        self._clock = clock
        self._wall = wall_clock
        self._windows: dict[_Key, _Window] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="mcptrace-refusals", daemon=True)
            self._thread.start()

    def record(
        self,
        reason: str,
        request_id: str | None,
        *,
        http_status: int | None = None,
        caller_id: str | None = None,
        tenant: str | None = None,
        principal: str | None = None,
        client_address: str | None = None,
        tool_name: str | None = None,
        method: str | None = None,
        retry_after_ms: int | None = None,
        limit_scope: str | None = None,
        error: str | None = None,
        session_id: str | None = None,
        session_owner: str | None = None,
    ) -> None:
        """Count one refused request; write its line now when its key was quiet (see the module docstring)."""
        self.stats.refused[reason] += 1
        if tool_name is not None:
            tool_name = tool_name[:MAX_TEXT]
        fields: dict[str, Any] = {
            f.STATUS: f.REFUSED, f.REFUSAL_REASON: reason, f.REQUEST_ID: request_id,
            f.HTTP_STATUS: http_status, f.CALLER_ID: caller_id, f.TENANT: tenant, f.PRINCIPAL: principal,
            f.CLIENT_ADDRESS: client_address, f.TOOL_NAME: tool_name, f.METHOD: method,
            f.RETRY_AFTER_MS: retry_after_ms, f.LIMIT_SCOPE: limit_scope,
            f.ERROR: error[:MAX_TEXT] if error else error,
            f.SESSION_ID: session_id[:MAX_TEXT] if session_id else session_id,
            f.SESSION_OWNER: session_owner, f.TRANSPORT: self.transport,
        }
        now, wall = self._clock(), self._wall()
        key: _Key = (reason, principal or client_address or caller_id, tool_name, http_status)
        with self._lock:
            window = self._windows.get(key)
            if window is None and len(self._windows) >= self.max_keys:
                key = (reason, key[1], None, http_status)
                fields[f.TOOL_NAME] = None
                window = self._windows.get(key)
            if window is not None and now < window.ends:
                self._count(window, fields, request_id, wall)
                return
            busy = False
            if window is not None and window.count:  # its interval is over and refusals kept coming
                self._write(window)  # its count goes first
                busy = True
            fresh = self._windows[key] = _Window(ends=now + self.interval)
            if busy:
                self._count(fresh, fields, request_id, wall)
            else:
                self._write_one(fields)
        if window is None:
            self._wake.set()

    @staticmethod
    def _count(window: _Window, fields: dict[str, Any], request_id: str | None, wall: float) -> None:
        if window.count == 0:
            window.first, window.first_wall = fields, wall
        window.count += 1
        window.last_id, window.last_wall = request_id, wall

    def flush(self, *, everything: bool = False) -> None:
        """Write the counts of every interval that has ended (every interval, with `everything`)."""
        now = self._clock()
        with self._lock:
            for key, window in list(self._windows.items()):
                if not everything and now < window.ends:
                    continue
                if window.count:
                    self._write(window)
                    self._windows[key] = _Window(ends=now + self.interval)
                else:  # quiet for a whole interval: its next refusal is written at once again
                    del self._windows[key]

    def close(self) -> None:
        """Write everything still counted; later refusals are written one line each."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush(everything=True)
        with self._lock:
            self._windows.clear()
        self.interval = 0.0

    def _run(self) -> None:
        while not self._closed:
            with self._lock:
                ends = min((w.ends for w in self._windows.values()), default=None)
            if ends is None:
                self._wake.wait()
            else:
                self._wake.wait(max(0.0, ends - self._clock()) + 0.001)
            self._wake.clear()
            if not self._closed:
                self.flush()

    def _write(self, window: _Window) -> None:
        assert window.first is not None
        fields = {
            **window.first,
            f.TIMESTAMP: utc_timestamp(window.first_wall),
            f.LAST_REQUEST_ID: window.last_id,
            f.LAST_TIMESTAMP: utc_timestamp(window.last_wall),
        }
        if window.count > 1:
            fields[f.COUNT] = window.count
        self._write_one(fields)

    def _write_one(self, fields: dict[str, Any]) -> None:
        line = {k: v for k, v in fields.items() if v is not None}
        # A fresh context: no field bound to the current request (another one's session, say) joins the line.
        contextvars.Context().run(self.logger.emit, f.EV_REQUEST_REFUSED, "warning", **line)
