"""Request ids: minted per JSON-RPC request, or taken from a proxy's `X-Request-ID`."""

from __future__ import annotations

import random
import re

_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    """`req-` and 64 random bits: unique across sessions, replicas and restarts.

    From `random` (reseeded in a forked child), not `os.urandom`: an id is a
    correlation key, not a secret, and a system call per request is not free.
    """
    return f"req-{random.getrandbits(64):016x}"


def accept_request_id(value: str | None) -> str | None:
    """A proxy-supplied id when it is safe to log and echo; None otherwise."""
    if value and _VALID.match(value):
        return value
    return None
