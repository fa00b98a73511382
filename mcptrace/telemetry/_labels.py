"""Metric label values from known sets only, so that no client can grow the number of series.

A request names its method, its protocol version and, for a tool call, its
tool: all client-chosen text. As metric labels each takes a value from a known
set (the protocol's methods, the published protocol versions, the tools the
server has registered); anything else is counted under `_unknown`. A client
inventing ten thousand tool names then costs ten thousand counts in one series,
not ten thousand series.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from mcp_types.methods import SPEC_CLIENT_METHODS
from mcp_types.version import KNOWN_PROTOCOL_VERSIONS

from mcptrace import _fields as f

UNKNOWN = f.UNKNOWN_LABEL
_VERSIONS = frozenset(KNOWN_PROTOCOL_VERSIONS)


def method_label(method: str) -> str:
    """A client-to-server method the protocol defines, else `_unknown`."""
    return method if method in SPEC_CLIENT_METHODS else UNKNOWN


def version_label(version: str) -> str:
    """A published protocol version, else `_unknown`."""
    return version if version in _VERSIONS else UNKNOWN


class RegisteredTools:
    """The server's tool names; a tool that is not one of them is labelled `_unknown`.

    Names come from `list_names` (the SDK's public `list_tools()`), read again
    when a call names a tool not known yet (a tool added while serving), at most
    once per `refresh_seconds`: made-up names cost one listing a second, not one
    per call. Without `list_names` every tool is `_unknown`.
    """

    def __init__(
        self,
        list_names: Callable[[], Awaitable[Iterable[str]]] | None,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_names = list_names
        self._names: frozenset[str] = frozenset()
        self._refresh_seconds = refresh_seconds
        self._next_refresh = float("-inf")
        self._clock = clock

    def unseen(self, name: str) -> bool:
        """Whether `name` is not known and the names may be read again now."""
        return (
            self._list_names is not None and name not in self._names and self._clock() >= self._next_refresh
        )

    async def refresh(self) -> None:
        if self._list_names is None or self._clock() < self._next_refresh:
            return
        self._next_refresh = self._clock() + self._refresh_seconds
        try:
            self._names = frozenset(await self._list_names())
        except Exception:
            pass  # keep the names known so far: a label never fails a request

    def label(self, name: str) -> str:
        return name if name in self._names else UNKNOWN
