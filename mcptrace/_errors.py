"""The mcptrace error hierarchy, in one place.

    MCPTraceError
    ├── ConfigError              bad configuration; the server refuses to start
    │   └── BindError            a non-loopback address without the explicit override
    ├── ProtocolError            a request that crosses the wire with a JSON-RPC code
    │   ├── RateLimitedError     -32000 "Rate limit exceeded" (data.retryAfterMs)
    │   ├── DownstreamError      a dependency failed or its breaker is open
    │   ├── AuthError            -32001 missing, bad, expired or revoked credentials (HTTP 401)
    │   └── ForbiddenError       -32003 a tool this caller's token does not allow (HTTP 403)
    ├── LogReadError             a log source that cannot be read at all
    ├── MissingDependencyError   an optional extra (e.g. the notebook stack) is not installed
    └── ProcessStartError        a child `python -m mcptrace ...` exited or hung before it was ready

Errors that cross the wire carry `code` (a JSON-RPC error code) and `data`.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
UNAUTHORIZED = -32001
FORBIDDEN = -32003


class MCPTraceError(Exception):
    """Base class of every error mcptrace raises on purpose."""


class ConfigError(MCPTraceError):
    """The configuration cannot work; raised before anything starts."""


class BindError(ConfigError):
    """Binding a non-loopback address was asked for without the explicit override."""


class ProtocolError(MCPTraceError):
    code: int = INTERNAL_ERROR

    def __init__(self, message: str, *, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.data = data


class RateLimitedError(ProtocolError):
    code = SERVER_ERROR

    def __init__(self, retry_after_ms: int, *, scope: str) -> None:
        super().__init__("Rate limit exceeded", data={"retryAfterMs": retry_after_ms, "scope": scope})
        self.retry_after_ms = retry_after_ms
        self.scope = scope


class DownstreamError(ProtocolError):
    code = SERVER_ERROR

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}", data={"service": service})
        self.service = service


class AuthError(ProtocolError):
    """Credentials are missing or do not hold; `reason` is safe to show (it never contains the token)."""

    code = UNAUTHORIZED

    def __init__(self, reason: str) -> None:
        super().__init__(f"Unauthorized: {reason}")
        self.reason = reason


class ForbiddenError(ProtocolError):
    code = FORBIDDEN

    def __init__(self, tool: str) -> None:
        super().__init__(f"Tool {tool!r} is not allowed for this caller", data={"tool": tool})
        self.tool = tool


class LogReadError(MCPTraceError):
    """A log source could not be opened or decompressed at all."""


class MissingDependencyError(MCPTraceError, ImportError):
    """An optional dependency is missing; the message says which extra to install."""


class ProcessStartError(MCPTraceError, RuntimeError):
    """A child process (server, upstream) exited or hung before it accepted requests."""
