"""Look up one request's records: from a fresh index when there is one, else by byte search.

Returns plain dicts (no polars), so the `chain` command stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace.logs._chainstore import lookup_in_store
from mcptrace.logs._fleet import fleet_root, lookup_fleet
from mcptrace.logs._search import close_ids, count_lines, search_field
from mcptrace.logs._sources import Paths, Source, resolve_sources


@dataclass
class LookupResult:
    records: list[dict[str, Any]]
    sources: list[Source]
    key: str
    bytes_searched: int = 0
    corrupt: list[str] = field(default_factory=list)
    from_index: bool = False
    #: On a fleet dataset: bytes fetched for the lookup, and the dataset's size.
    bytes_total: int = 0

    def not_found_message(self, value: str) -> str:
        """Say what was searched and suggest ids that are close (a second pass, only on failure)."""
        if self.bytes_total:
            return f"no lines with {self.key}={value!r} in the fleet dataset ({self.read_message()})"
        lines = count_lines(self.sources)
        where = f"{len(self.sources)} file(s), {lines} line(s), {self.bytes_searched / 1e6:.1f} MB"
        msg = f"no lines with {self.key}={value!r} in {where}: {', '.join(s.name for s in self.sources[:5])}"
        if len(self.sources) > 5:
            msg += f" (+{len(self.sources) - 5} more)"
        if self.key == f.REQUEST_ID:
            close = close_ids(self.sources, value)
            if close:
                msg += f"; close ids: {', '.join(close)}"
        return msg


    def read_message(self) -> str:
        return f"read {self.bytes_searched / 1e6:.2f} MB of {self.bytes_total / 1e6:.2f} MB"


def lookup(
    paths: Paths = None,
    *,
    key: str = f.REQUEST_ID,
    value: str,
    use_index: bool = True,
    replicas: Sequence[str] | None = None,
) -> LookupResult:
    """Every record whose `key` is `value`, in time order.

    On a fleet dataset (see `load`) each record has its `replica`, and only
    request ids are looked up (through the dataset's id tables).
    """
    root = fleet_root(paths)
    if root is not None or replicas:
        if root is None or key != f.REQUEST_ID:
            raise LogReadError("a fleet dataset (an s3:// URL or a folder written by `mcptrace index --dest`) "
                               "is searched by request id, and replicas are chosen only there")
        fleet = lookup_fleet(root, value, replicas)
        return LookupResult(fleet.records, [], key, fleet.bytes_read, from_index=True, bytes_total=fleet.bytes_total)
    sources = resolve_sources(paths)
    if use_index and key == f.REQUEST_ID:
        records = lookup_in_store(sources, value)
        if records is not None:
            return LookupResult(records, sources, key, from_index=True)
    found = search_field(sources, key, value)
    return LookupResult(found.records, sources, key, found.bytes_searched, found.corrupt)
