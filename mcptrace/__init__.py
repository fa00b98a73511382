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
    ProtocolError,
    RateLimitedError,
)
from mcptrace._schema import LOG_FIELDS, LOG_SCHEMA_VERSION, polars_schema
from mcptrace._version import __version__
from mcptrace.guards._stats import GuardStats
from mcptrace.telemetry._context import downstream

__all__ = [
    "LOG_FIELDS",
    "LOG_SCHEMA_VERSION",
    "AuthError",
    "BindError",
    "Config",
    "ConfigError",
    "DownstreamError",
    "ForbiddenError",
    "GuardStats",
    "LogReadError",
    "MCPTraceError",
    "ProtocolError",
    "RateLimitedError",
    "__version__",
    "downstream",
    "polars_schema",
]
