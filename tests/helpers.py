"""Shared assertions for the test suite."""

from __future__ import annotations

import json
from pathlib import Path

from mcptrace._schema import validate_record


def read_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_contract(records: list[dict[str, object]]) -> None:
    problems = {i: validate_record(r) for i, r in enumerate(records) if validate_record(r)}
    assert not problems, problems
