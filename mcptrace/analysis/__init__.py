"""Forensics over mcptrace's JSON logs: load them, then ask pure `LazyFrame -> LazyFrame` questions.

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
    from mcptrace.analysis._index import IndexReport, build_index
    from mcptrace.analysis._load import Loaded, load
    from mcptrace.analysis._loadreport import CorruptLine, LoadReport
    from mcptrace.analysis._loops import loops
    from mcptrace.analysis._report import format_chain, report_text
    from mcptrace.analysis._runs import assign_runs, runs
    from mcptrace.analysis._sessions import active_sessions, sessions, timeline
    from mcptrace.analysis._sources import Source, resolve_sources
    from mcptrace.analysis._stats import (
        error_messages,
        error_sources,
        method_stats,
        service_stats,
        tool_stats,
        top_callers,
    )

_EXPORTS: dict[str, str] = {
    "chain": "_chain",
    "downstream_calls": "_chain",
    "outcomes": "_chain",
    "IndexReport": "_index",
    "build_index": "_index",
    "CorruptLine": "_loadreport",
    "LoadReport": "_loadreport",
    "Loaded": "_load",
    "load": "_load",
    "loops": "_loops",
    "format_chain": "_report",
    "report_text": "_report",
    "assign_runs": "_runs",
    "runs": "_runs",
    "active_sessions": "_sessions",
    "sessions": "_sessions",
    "timeline": "_sessions",
    "Source": "_sources",
    "resolve_sources": "_sources",
    "error_messages": "_stats",
    "error_sources": "_stats",
    "method_stats": "_stats",
    "service_stats": "_stats",
    "tool_stats": "_stats",
    "top_callers": "_stats",
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
    "load",
    "loops",
    "method_stats",
    "outcomes",
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
    value = getattr(_importlib.import_module(f"mcptrace.analysis.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
