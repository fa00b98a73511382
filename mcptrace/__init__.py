"""mcptrace: run MCP servers in production and investigate them when they break."""

from mcptrace._config import Config
from mcptrace._errors import (
    BindError,
    ConfigError,
    DownstreamError,
    LogReadError,
    MCPTraceError,
    ProcessStartError,
    ProtocolError,
    RateLimitedError,
)
from mcptrace._schema import LOG_FIELDS, LOG_SCHEMA_VERSION, polars_schema
from mcptrace._version import __version__
from mcptrace.telemetry._context import downstream

__all__ = [
    "LOG_FIELDS",
    "LOG_SCHEMA_VERSION",
    "BindError",
    "Config",
    "ConfigError",
    "DownstreamError",
    "LogReadError",
    "MCPTraceError",
    "ProcessStartError",
    "ProtocolError",
    "RateLimitedError",
    "__version__",
    "downstream",
    "polars_schema",
]
