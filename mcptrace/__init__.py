"""mcptrace: run MCP servers in production and investigate them when they break."""

from mcptrace._config import Config
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
from mcptrace._schema import LOG_FIELDS, LOG_SCHEMA_VERSION, polars_schema
from mcptrace._version import __version__
from mcptrace.telemetry._context import downstream
from mcptrace.telemetry._log import EventLogger, LogSink

_LAZY = {
    # Loaded on first use: they import the MCP SDK, which `mcptrace.analysis` must never pull in.
    "instrument": "mcptrace.middleware._instrument",
    "Instrumentation": "mcptrace.middleware._instrument",
    "GuardCounters": "mcptrace.telemetry._metrics",
    "register_guard_metrics": "mcptrace.telemetry._metrics",
    # The guards package brings JWT and HTTP clients: too slow for the analysis commands' start.
    "GuardStats": "mcptrace.guards._stats",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mcptrace' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
    "ProcessStartError",
    "ProtocolError",
    "RateLimitedError",
    "__version__",
    "downstream",
    "instrument",
    "polars_schema",
    "register_guard_metrics",
]
