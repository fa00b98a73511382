"""Canonical hashes of JSON values, so equal arguments hash equal whatever their key order."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson


def canonical_json(value: Any) -> bytes:
    """Key-sorted, whitespace-free JSON: the same bytes for the same value.

    Never raises for a decoded JSON value: integers past 64 bits, nesting past
    orjson's depth limit and lone surrogates (all of which a client can send)
    fall back to the standard library's encoder.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
        except (TypeError, ValueError, RecursionError):
            return b'"<unencodable>"'


def json_hash(value: Any, *, length: int = 16) -> str:
    """A short, stable SHA-256 digest of a JSON value (key-order-insensitive)."""
    return bytes_hash(canonical_json(value), length=length)


def bytes_hash(data: bytes, *, length: int = 16) -> str:
    """`json_hash` of a value already encoded with `canonical_json`."""
    return hashlib.sha256(data).hexdigest()[:length]


def text_hash(text: str, *, length: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
