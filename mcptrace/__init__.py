"""mcptrace: run MCP servers in production and investigate them when they break."""

import typing as _typing

from mcptrace._errors import (
    AuthError,
    BindError,
    ConfigError,
    DownstreamError,
    ForbiddenError,
    LogReadError,
    MCPTraceError,
    MissingDependencyError,
    ProcessStartError,
    ProtocolError,
    RateLimitedError,
)
from mcptrace._version import __version__

if _typing.TYPE_CHECKING:
    from mcptrace._config import Config
    from mcptrace._schema import LOG_FIELDS, LOG_SCHEMA_VERSION, polars_schema
    from mcptrace.guards._stats import GuardStats
    from mcptrace.middleware._instrument import Instrumentation, instrument
    from mcptrace.telemetry._context import downstream
    from mcptrace.telemetry._log import EventLogger
    from mcptrace.telemetry._metrics import GuardCounters, register_guard_metrics
    from mcptrace.telemetry._sink import LogSink
    from mcptrace.telemetry._spanprocess import ProcessSpanExporter

_LAZY = {
    # Loaded on first use, so that the analysis commands start without the server's modules.
    "Config": "mcptrace._config",
    "LOG_FIELDS": "mcptrace._schema",
    "LOG_SCHEMA_VERSION": "mcptrace._schema",
    "polars_schema": "mcptrace._schema",
    "downstream": "mcptrace.telemetry._context",
    "EventLogger": "mcptrace.telemetry._log",
    "LogSink": "mcptrace.telemetry._sink",
    # Loaded on first use: they import the MCP SDK, which `mcptrace.analysis` must never pull in.
    "instrument": "mcptrace.middleware._instrument",
    "Instrumentation": "mcptrace.middleware._instrument",
    "GuardCounters": "mcptrace.telemetry._metrics",
    "register_guard_metrics": "mcptrace.telemetry._metrics",
    "ProcessSpanExporter": "mcptrace.telemetry._spanprocess",
    # The guards package brings JWT and HTTP clients: too slow for the analysis commands' start.
    "GuardStats": "mcptrace.guards._stats",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mcptrace' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "LOG_FIELDS",
    "LOG_SCHEMA_VERSION",
    "AuthError",
    "BindError",
    "Config",
    "ConfigError",
    "DownstreamError",
    "EventLogger",
    "ForbiddenError",
    "GuardCounters",
    "GuardStats",
    "Instrumentation",
    "LogReadError",
    "LogSink",
    "MCPTraceError",
    "MissingDependencyError",
    "ProcessSpanExporter",
    "ProcessStartError",
    "ProtocolError",
    "RateLimitedError",
    "__version__",
    "downstream",
    "instrument",
    "polars_schema",
    "register_guard_metrics",
]
