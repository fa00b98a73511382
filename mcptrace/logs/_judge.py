"""The reading rules of `mcptrace._schema.READING_RULES`, one line at a time, in plain Python.

Most lines never come here: polars reads them in bulk (`_parse.lazy_rows` and
`_parse.settle`) with the same rules. A line comes here when polars refuses it (bad JSON, an
object where text belongs, a list that is not one) or when it is found by a
search (`chain`); this module then says whether it is a record, and if so
returns it repaired so that polars reads it exactly as a clean line. No
polars here: `chain` uses it and must start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from mcptrace import _fields as f
from mcptrace._schema import DOWNSTREAM_FIELDS, LOG_FIELDS, MAP_ENTRY_FIELDS

__all__ = ["Verdict", "judge_line", "judge_value", "parse_timestamp"]

#: A JSON number written as a string ("12.5"): read as the number.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def parse_timestamp(text: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime; one without an offset is UTC. None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass
class Verdict:
    """A record (repaired) or the reason it is not one; `notes` name the values read as null."""

    record: dict[str, Any] | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def judge_line(line: bytes, *, last: bool = False) -> Verdict:
    """Decode and judge one raw line; `last` marks a final line without a newline (a torn write)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return Verdict(reason="not UTF-8")
        return Verdict(reason=f"{'truncated line' if last else 'bad JSON'} ({exc})")
    return judge_value(value)


def judge_value(value: Any) -> Verdict:
    """Judge a decoded line: the envelope decides (object, timestamp, event); fields are repaired or nulled."""
    if not isinstance(value, dict):
        return Verdict(reason=f"not a JSON object ({type(value).__name__})")
    problems = []
    stamp = value.get(f.TIMESTAMP)
    if stamp is None:
        problems.append("missing timestamp")
    elif parse_timestamp(stamp) is None:
        problems.append(f"unreadable timestamp {stamp!r}")
    event = value.get(f.EVENT)
    if event is None:
        problems.append("missing event")
    elif isinstance(event, dict | list):
        problems.append(f"event is not text ({type(event).__name__})")
    if problems:
        return Verdict(reason=" and ".join(problems))
    verdict = Verdict(record=dict(value))
    _repair(verdict.record, LOG_FIELDS, verdict.notes, "")  # type: ignore[arg-type]
    return verdict


def _repair(record: dict[str, Any], kinds: dict[str, str], notes: list[str], prefix: str) -> None:
    for name, value in list(record.items()):
        kind = kinds.get(name)
        if kind is None or value is None or name in (f.TIMESTAMP, f.EVENT):
            continue
        fixed, ok = _coerce(value, kind, notes, prefix + name)
        if not ok:
            notes.append(f"{prefix}{name}: expected {kind}, got {_shown(value)}; read as null")
            fixed = None
        record[name] = fixed


def _coerce(value: Any, kind: str, notes: list[str], where: str) -> tuple[Any, bool]:
    """(value as polars will read it, whether it is readable as `kind`)."""
    if kind in ("str", "datetime"):
        return value, not isinstance(value, dict | list)
    if kind in ("int", "float"):
        if isinstance(value, bool | dict | list):
            return None, False
        if isinstance(value, str):
            if not _NUMBER.fullmatch(value.strip()):
                return None, False
            number = float(value)
            if kind == "int":
                return (int(number), True) if number.is_integer() and abs(number) < 2**63 else (None, False)
            return number, True
        if kind == "int" and (isinstance(value, float) or not -(2**63) <= value < 2**63):
            return (int(value), True) if isinstance(value, float) and value.is_integer() else (None, False)
        return value, True
    # list[downstream] / map[str]: a list of objects whose fields follow the same rules
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return None, False
    fields = DOWNSTREAM_FIELDS if kind == "list[downstream]" else MAP_ENTRY_FIELDS
    items = []
    for i, item in enumerate(value):
        item = dict(item)
        _repair(item, fields, notes, f"{where}[{i}].")
        items.append(item)
    return items, True


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:40])
    return type(value).__name__


def dumps(record: dict[str, Any]) -> bytes:
    """A repaired record as one JSON line, for polars to read like any other."""
    return orjson.dumps(record)
