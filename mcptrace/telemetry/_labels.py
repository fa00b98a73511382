"""Label values a metric keeps apart, so that no client can grow the number of series.

A label takes a value from a known set (the tools the server has registered) or,
where there is no such set, one of the first `limit` distinct values seen (callers);
anything else is counted under `_unknown`. Each series is then one a person can
read on a dashboard, and a client inventing names costs nothing but a count.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from mcptrace import _fields as f

UNKNOWN = f.UNKNOWN_LABEL


class FirstSeen:
    """The first `limit` distinct values keep their own label value; later ones (and None) are `_unknown`.

    First come, first kept: with bearer tokens the values are authenticated
    caller ids (as many as the token store holds); without auth they are what
    clients declare, so a client declaring many names can fill the set, after
    which every new name is counted as `_unknown`.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return UNKNOWN
        kept = self._kept
        if value in kept:
            return value
        if len(kept) < self.limit:
            kept.add(value)
            return value
        return UNKNOWN


class RegisteredTools:
    """The server's tool names: a call to a tool that does not exist is labelled `_unknown`.

    The names are read through `list_names` (the SDK's public `list_tools()`),
    again whenever a call names a tool not seen yet (one added while serving),
    at most once per `refresh_seconds`: a client calling made-up tools costs one
    listing a second, not one per call. Without `list_names` (a server that
    cannot list its tools) the first `limit` names seen are kept instead.
    """

    def __init__(
        self,
        list_names: Callable[[], Awaitable[Iterable[str]]] | None,
        *,
        refresh_seconds: float = 1.0,
        limit: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_names = list_names
        self._names: frozenset[str] = frozenset()
        self._refresh_seconds = refresh_seconds
        self._next_refresh = float("-inf")
        self._clock = clock
        self._fallback = FirstSeen(limit) if list_names is None else None

    @property
    def names(self) -> frozenset[str]:
        """The registered names read so far (empty before the first `refresh`)."""
        return self._names

    def unseen(self, name: str) -> bool:
        """Whether `name` is not a known tool and the names could be read again (`refresh`)."""
        return self._list_names is not None and name not in self._names

    async def refresh(self) -> None:
        """Read the registered names again, unless that was done less than `refresh_seconds` ago."""
        now = self._clock()
        if self._list_names is None or now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_seconds
        try:
            self._names = frozenset(await self._list_names())
        except Exception:
            pass  # keep the names known so far: labels must never fail a request

    def label(self, name: str) -> str:
        if self._fallback is not None:
            return self._fallback(name)
        return name if name in self._names else UNKNOWN
