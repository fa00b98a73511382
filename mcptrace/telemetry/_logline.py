"""One log record as one line of bytes: the contract's timestamp format and a JSON encoding that never fails.

Shared by the event logger (every line) and the sink (its own `log_gap` lines),
so both write the same shape.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

_ts_cache: tuple[int, str] = (-1, "")


def utc_timestamp(now: float | None = None) -> str:
    """`2026-11-25T14:32:07.123Z`: UTC, milliseconds, `Z` (the contract's format)."""
    global _ts_cache
    t = time.time() if now is None else now
    second = int(t)
    cached_second, prefix = _ts_cache
    if cached_second != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _ts_cache = (second, prefix)
    return f"{prefix}.{int((t - second) * 1000):03d}Z"


def encode_line(record: dict[str, Any]) -> bytes:
    """One JSON line, whatever the values: client-sent text may hold lone surrogates or 100-digit integers."""
    try:
        return orjson.dumps(record, default=str) + b"\n"
    except TypeError:
        return json.dumps(record, default=str, separators=(",", ":")).encode() + b"\n"
