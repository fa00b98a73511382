"""The public API is exactly what `mcptrace.__all__` names, and every name resolves."""

from __future__ import annotations

import mcptrace

PUBLIC = {
    "LOG_FIELDS", "LOG_SCHEMA_VERSION", "AuthError", "BindError", "Config", "ConfigError", "DownstreamError",
    "EventLogger", "ForbiddenError", "GuardCounters", "GuardStats", "Instrumentation", "LogReadError", "LogSink",
    "MCPTraceError", "MissingDependencyError", "ProcessSpanExporter", "ProcessStartError", "ProtocolError",
    "RateLimitedError",
    "__version__", "downstream", "instrument", "polars_schema", "register_guard_metrics",
}


def test_all_names_the_public_api_and_nothing_else() -> None:
    assert set(mcptrace.__all__) == PUBLIC
    assert len(mcptrace.__all__) == len(PUBLIC)


def test_every_public_name_resolves() -> None:
    for name in mcptrace.__all__:
        assert getattr(mcptrace, name) is not None, name


def test_every_error_derives_from_the_one_base() -> None:
    for name in mcptrace.__all__:
        value = getattr(mcptrace, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, mcptrace.MCPTraceError), name
