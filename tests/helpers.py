"""Shared assertions for the test suite."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcptrace._schema import validate_record


def read_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
