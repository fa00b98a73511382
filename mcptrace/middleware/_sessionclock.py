"""`mcp.server.session.duration`: how long each Streamable HTTP session lived, recorded as it ends.

The SDK's session manager keeps its open sessions in one dict: a session is
added when it is admitted and popped however it ends (the client's DELETE, the
idle timeout, a crash, an initialize that failed), and the dict is cleared at
shutdown. Swapping in a dict that notes when each key arrived and records the
duration when it leaves sees every one of those ends, and costs nothing on the
path of a request. Sessionless traffic (the 2026-07-28 wire, a stateless
server) opens no session and records nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

#: Receives the seconds a session lived.
RecordSession = Callable[[float], None]


class SessionClock(dict[str, Any]):
    """The session manager's session table, timing each session from insertion to removal."""

    def __init__(self, sessions: Iterable[tuple[str, Any]], record: RecordSession) -> None:
        super().__init__(sessions)
        self._record = record
        now = time.monotonic()
        #: Sessions already open when the clock was installed are timed from then.
        self._opened: dict[str, float] = dict.fromkeys(self, now)

    def __setitem__(self, session_id: str, transport: Any) -> None:
        if session_id not in self._opened:
            self._opened[session_id] = time.monotonic()
        super().__setitem__(session_id, transport)

    def __delitem__(self, session_id: str) -> None:
        super().__delitem__(session_id)
        self._ended(session_id)

    def pop(self, session_id: str, *default: Any) -> Any:
        value = super().pop(session_id, *default)
        self._ended(session_id)
        return value

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._ended(item[0])
        return item

    def clear(self) -> None:
        for session_id in list(self):
            self._ended(session_id)
        super().clear()

    def _ended(self, session_id: str) -> None:
        opened = self._opened.pop(session_id, None)
        if opened is None:
            return
        try:
            self._record(time.monotonic() - opened)
        except Exception:  # telemetry never breaks the session manager
            pass


def time_sessions(server: Any, record: RecordSession) -> None:
    """Record every Streamable HTTP session's duration on `server` (an `MCPServer`).

    Its session manager exists once `streamable_http_app()` has been called:
    the clock goes in now if it does, else as that call returns.
    """
    if _install(server, record):
        return
    original = getattr(server, "streamable_http_app", None)
    if original is None:
        return

    def streamable_http_app(*args: Any, **kwargs: Any) -> Any:
        app = original(*args, **kwargs)
        _install(server, record)
        return app

    server.streamable_http_app = streamable_http_app


def _install(server: Any, record: RecordSession) -> bool:
    try:
        manager = server.session_manager
    except Exception:  # not created yet
        return False
    sessions = getattr(manager, "_server_instances", None)
    if isinstance(sessions, SessionClock):
        return True
    if not isinstance(sessions, dict):  # not the table this module knows: leave the manager alone
        return False
    manager._server_instances = SessionClock(sessions.items(), record)
    return True
