"""The session table clock: every way a session leaves the SDK's table records its lifetime once."""

from __future__ import annotations

import time
from typing import Any

from mcptrace.middleware._sessionclock import SessionClock, time_sessions


def clock_with(*ids: str) -> tuple[SessionClock, list[float]]:
    recorded: list[float] = []
    clock = SessionClock([], recorded.append)
    for session_id in ids:
        clock[session_id] = object()
    return clock, recorded


def test_a_popped_session_records_the_time_since_it_was_added() -> None:
    clock, recorded = clock_with("a")
    time.sleep(0.05)
    clock.pop("a", None)
    assert len(recorded) == 1 and recorded[0] >= 0.05


def test_popping_an_unknown_or_already_removed_session_records_nothing() -> None:
    clock, recorded = clock_with("a")
    clock.pop("a", None)
    clock.pop("a", None)
    clock.pop("never", None)
    assert len(recorded) == 1


def test_replacing_a_session_keeps_its_opening_time() -> None:
    clock, recorded = clock_with("a")
    time.sleep(0.05)
    clock["a"] = object()
    del clock["a"]
    assert recorded[0] >= 0.05


def test_shutdown_clears_and_records_every_open_session() -> None:
    clock, recorded = clock_with("a", "b", "c")
    clock.popitem()
    clock.clear()
    assert len(recorded) == 3 and not clock


def test_sessions_open_before_the_clock_are_timed_from_its_installation() -> None:
    recorded: list[float] = []
    clock = SessionClock([("old", object())], recorded.append)
    assert "old" in clock
    clock.pop("old")
    assert len(recorded) == 1


def test_a_failing_recorder_does_not_break_the_table() -> None:
    def broken(seconds: float) -> None:
        raise RuntimeError("exporter gone")

    clock = SessionClock([], broken)
    clock["a"] = object()
    assert clock.pop("a") is not None and not clock


def test_the_clock_goes_into_a_server_whose_app_exists_already() -> None:
    from mcp.server import MCPServer

    server: MCPServer[Any] = MCPServer("built-first")
    server.streamable_http_app()
    time_sessions(server, lambda seconds: None)
    assert isinstance(server.session_manager._server_instances, SessionClock)


def test_the_clock_goes_in_when_the_app_is_built_later_and_only_once() -> None:
    from mcp.server import MCPServer

    server: MCPServer[Any] = MCPServer("instrumented-first")
    time_sessions(server, lambda seconds: None)
    server.streamable_http_app()
    clock = server.session_manager._server_instances
    assert isinstance(clock, SessionClock)
    time_sessions(server, lambda seconds: None)
    assert server.session_manager._server_instances is clock
