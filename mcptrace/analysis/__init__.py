"""Forensics over mcptrace's JSON logs: load them, then ask pure `LazyFrame -> LazyFrame` questions.

The reading (`load`, `build_index`, sources, the load report) is `mcptrace.logs`;
its public names are re-exported here so that one import serves a notebook.

    from mcptrace.analysis import load, tool_stats
    loaded = load(["logs/"])                  # files, globs, directories, .gz/.zst, "-"
    print(tool_stats(loaded.frame).collect())
    print(loaded.report.summary())            # corrupt lines, with file and line number

Importing this package loads no server code (no starlette, uvicorn or mcp), and
its names are resolved on first use: the `chain` command's lookup, which needs
neither polars nor pyarrow, does not pay for them.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from mcptrace.analysis._chain import chain, downstream_calls, outcomes
    from mcptrace.analysis._incidents import incidents
    from mcptrace.analysis._loops import loops
    from mcptrace.analysis._report import format_chain, report_text
    from mcptrace.analysis._runs import assign_runs, runs
    from mcptrace.analysis._sessions import active_sessions, sessions, timeline
    from mcptrace.analysis._stats import (
        error_messages,
        error_sources,
        method_stats,
        refused_requests,
        service_stats,
        tool_stats,
        top_callers,
    )
    from mcptrace.logs._index import IndexReport, build_index
    from mcptrace.logs._load import Loaded, load
    from mcptrace.logs._loadreport import CorruptLine, LoadReport
    from mcptrace.logs._sources import Source, resolve_sources

_EXPORTS: dict[str, str] = {
    "chain": "mcptrace.analysis._chain",
    "downstream_calls": "mcptrace.analysis._chain",
    "outcomes": "mcptrace.analysis._chain",
    "incidents": "mcptrace.analysis._incidents",
    "IndexReport": "mcptrace.logs._index",
    "build_index": "mcptrace.logs._index",
    "CorruptLine": "mcptrace.logs._loadreport",
    "LoadReport": "mcptrace.logs._loadreport",
    "Loaded": "mcptrace.logs._load",
    "load": "mcptrace.logs._load",
    "loops": "mcptrace.analysis._loops",
    "format_chain": "mcptrace.analysis._report",
    "report_text": "mcptrace.analysis._report",
    "assign_runs": "mcptrace.analysis._runs",
    "runs": "mcptrace.analysis._runs",
    "active_sessions": "mcptrace.analysis._sessions",
    "sessions": "mcptrace.analysis._sessions",
    "timeline": "mcptrace.analysis._sessions",
    "Source": "mcptrace.logs._sources",
    "resolve_sources": "mcptrace.logs._sources",
    "error_messages": "mcptrace.analysis._stats",
    "error_sources": "mcptrace.analysis._stats",
    "method_stats": "mcptrace.analysis._stats",
    "refused_requests": "mcptrace.analysis._stats",
    "service_stats": "mcptrace.analysis._stats",
    "tool_stats": "mcptrace.analysis._stats",
    "top_callers": "mcptrace.analysis._stats",
}

__all__ = [
    "CorruptLine",
    "IndexReport",
    "LoadReport",
    "Loaded",
    "Source",
    "active_sessions",
    "assign_runs",
    "build_index",
    "chain",
    "downstream_calls",
    "error_messages",
    "error_sources",
    "format_chain",
    "incidents",
    "load",
    "loops",
    "method_stats",
    "outcomes",
    "refused_requests",
    "report_text",
    "resolve_sources",
    "runs",
    "service_stats",
    "sessions",
    "timeline",
    "tool_stats",
    "top_callers",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mcptrace.analysis' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
