"""Shared assertions for the test suite."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mcptrace._schema import validate_record


def read_log(path: Path) -> list[dict[str, object]]:
    """Every complete line of a log the server may still be writing (a last line without its newline waits)."""
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.split("\n") if line.strip()]


def assert_contract(records: list[dict[str, object]]) -> None:
    problems = {i: validate_record(r) for i, r in enumerate(records) if validate_record(r)}
    assert not problems, problems


def wait_for_log(
    path: Path, match: Callable[[dict[str, Any]], bool], *, count: int = 1, timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """Log lines matching `match`, once at least `count` reached the file (the writer buffers briefly)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in read_log(path) if match(r)] if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def read_flushed_log(path: Path, *, timeout: float = 5.0) -> list[dict[str, object]]:
    """The log once every request it holds has its closing line (`tool_call` or `response_sent`; the sink
    flushes every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_log(path)
        received = {r["mcp_request_id"] for r in records if r["event"] == "request_received"}
        answered = {r["mcp_request_id"] for r in records if r["event"] in ("response_sent", "tool_call")}
        if received <= answered or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


#: Server flags that take the rate limits out of the way, for tests about input or faults, not volume.
UNLIMITED = ("--rate-limit-caller", "100000/100000", "--rate-limit-tools", "*=100000/100000")

T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float = 20.0) -> T:
    """Retry `check` (which asserts) until it passes: the server's state changes outside this process."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)
