"""Request bodies: read only once the headers were judged, within a size, a deadline and a budget.

`BodyBudget` bounds the bytes of request bodies in flight, for the whole server
(`MCPTRACE_BODY_BUDGET_BYTES`, default 64 MiB) and per principal (default a
quarter of it): a body is reserved before its first byte is read (its declared
`Content-Length`, or the size limit for a chunked body) and released once the
request is done. Past either bound the request is refused at once with 503 and
`Retry-After`, instead of the server buffering whatever many slow uploads send.

`read_body_within` then reads it: more than `limit` bytes is `TOO_LARGE` (413),
not all of it within `timeout` seconds is `TOO_SLOW` (408). `drain` reads and
discards what a client still sends after an early answer, up to a bound, so a
client that sends its whole body before reading gets the answer instead of a
connection reset.
"""

from __future__ import annotations

import enum
from collections import Counter

import anyio
from starlette.types import Receive, Scope

#: Bytes and seconds `drain` reads and discards at most before the connection is given up.
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 5.0


class BodyBudget:
    """Bytes of request bodies in flight, in total and per principal."""

    def __init__(self, total: int, per_principal: int) -> None:
        self.total = total
        self.per_principal = per_principal
        self.in_flight = 0
        self._by_principal: Counter[str] = Counter()

    def reserve(self, who: str, size: int) -> bool:
        """Hold `size` bytes for `who`; False (nothing held) when that would pass either bound."""
        if self.in_flight + size > self.total or self._by_principal[who] + size > self.per_principal:
            return False
        self.in_flight += size
        self._by_principal[who] += size
        return True

    def held_by(self, who: str) -> int:
        return self._by_principal.get(who, 0)

    def release(self, who: str, size: int) -> None:
        self.in_flight -= size
        left = self._by_principal[who] - size
        if left > 0:
            self._by_principal[who] = left
        else:
            del self._by_principal[who]


class BodyProblem(enum.Enum):
    TOO_LARGE = 413
    TOO_SLOW = 408
    #: The client went away before its body was complete: there is no one to answer.
    GONE = 499


def declared_length(scope: Scope) -> int | None:
    """The request's `Content-Length`, or None (chunked, or not a number: the HTTP parser judges those)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_body_within(receive: Receive, *, limit: int, timeout: float) -> bytes | BodyProblem:
    """The whole body, or why not: more than `limit` bytes, not all of it within `timeout` seconds, or the
    client gone before it was all there."""
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(timeout):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return BodyProblem.GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return BodyProblem.TOO_LARGE
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    return BodyProblem.TOO_SLOW


async def drain(receive: Receive, *, max_bytes: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS) -> None:
    """Read and discard the rest of a body we answered early (up to a bound), as nginx's lingering close does."""
    seen = 0
    with anyio.move_on_after(seconds):
        while seen <= max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
