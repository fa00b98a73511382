"""The reading layer: log files, their lines, the judgement of each line, the index and the search.

    from mcptrace.logs import load
    loaded = load(["logs/"])                  # files, globs, directories, .gz/.zst, "-"
    print(loaded.report.summary())            # corrupt lines, with file and line number
    ship(["logs/"], "s3://bucket/fleet", replica="web-1")   # the fleet dataset (see `_ship`)

Everything that turns files into records lives here; the questions asked of
those records live in `mcptrace.analysis`, which imports this package and
never the other way round. Names are resolved on first use, so finding one
request (`lookup`) needs neither polars nor pyarrow.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from mcptrace.logs._index import IndexReport, build_index
    from mcptrace.logs._load import Loaded, load
    from mcptrace.logs._loadreport import CorruptLine, LoadReport
    from mcptrace.logs._lookup import LookupResult, lookup
    from mcptrace.logs._ship import ShipReport, ship
    from mcptrace.logs._sources import Source, resolve_sources

_EXPORTS: dict[str, str] = {
    "IndexReport": "_index",
    "build_index": "_index",
    "CorruptLine": "_loadreport",
    "LoadReport": "_loadreport",
    "Loaded": "_load",
    "load": "_load",
    "LookupResult": "_lookup",
    "lookup": "_lookup",
    "ShipReport": "_ship",
    "ship": "_ship",
    "Source": "_sources",
    "resolve_sources": "_sources",
}

__all__ = [
    "CorruptLine",
    "IndexReport",
    "LoadReport",
    "Loaded",
    "LookupResult",
    "ShipReport",
    "Source",
    "build_index",
    "load",
    "lookup",
    "resolve_sources",
    "ship",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mcptrace.logs' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"mcptrace.logs.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
