"""The public surface, pinned: each package's `__all__` is exactly the listed names, a package holds no other
public name, and a name exported twice is one object. A change here is a change of the public API."""

from __future__ import annotations
import __future__

import importlib
import pkgutil
import types
from typing import Any

import pytest

import mcptrace

SURFACE: dict[str, set[str]] = {
    "mcptrace": {
        "LOG_FIELDS", "LOG_SCHEMA_VERSION", "AuthError", "BindError", "Config", "ConfigError", "DownstreamError",
        "EventLogger", "ForbiddenError", "GuardCounters", "GuardStats", "Instrumentation", "LogReadError",
        "LogSink", "MCPTraceError", "MissingDependencyError", "ProcessSpanExporter", "ProcessStartError",
        "ProtocolError", "RateLimitedError", "__version__", "downstream", "instrument", "polars_schema",
        "register_guard_metrics",
    },
    "mcptrace.analysis": {
        "CorruptLine", "IndexReport", "LoadReport", "Loaded", "Source", "active_sessions", "assign_runs",
        "build_index", "chain", "downstream_calls", "error_messages", "error_sources", "format_chain", "incidents",
        "load", "loops", "method_stats", "outcomes", "refused_requests", "report_text", "resolve_sources", "runs",
        "service_stats", "sessions", "timeline", "tool_stats", "top_callers",
    },
    "mcptrace.notebook": {
        "Explorer", "caller_rate", "caller_rates", "error_heatmap", "error_rates", "incident_table",
        "incident_timeline", "join_logs", "latency_percentiles", "latency_table", "load_logs", "load_spans",
        "loop_episodes", "loop_timeline", "refusals", "refusals_over_time", "request_records", "run_calls",
        "run_summary", "runs_timeline", "sessions_over_time", "spans_with_requests", "tool_calls", "waterfall",
    },
    "mcptrace.logs": {
        "CorruptLine", "IndexReport", "LoadReport", "Loaded", "LookupResult", "ShipReport", "Source", "build_index",
        "load", "lookup", "resolve_sources", "ship",
    },
    "mcptrace.guards": {
        "BreakerOpenError", "BreakerPolicy", "Breakers", "CircuitBreaker", "Decision", "GuardStats", "Identity",
        "JwtVerifier", "Limit", "LimitBackend", "LimitPolicy", "MemoryBackend", "RateLimiter", "RedisBackend",
        "TokenStore",
    },
    "mcptrace.gate": {"Alerting", "GateOptions", "GateReport", "Probe", "ProbeState", "Step", "run_gate", "run_probe"},
    "mcptrace.demo": {"DemoResult", "run_demo"},
    "mcptrace.testing": {
        "RunningProcess", "initialize_message", "running", "running_proxy", "running_server", "running_upstream",
        "stop_process", "subprocess_env",
    },
    "mcptrace.cli": {"build_parser", "main"},
    # Reached through the command line and the names above; nothing of their own is public.
    "mcptrace.middleware": set(),
    "mcptrace.proxy": set(),
    "mcptrace.server": set(),
    "mcptrace.telemetry": set(),
}


def public_names(module: types.ModuleType) -> set[str]:
    """What `module` holds under a public name: not its submodules, not `from __future__ import annotations`."""
    return {
        name for name, value in vars(module).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
        and value is not __future__.annotations
    }


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_all_names_the_public_api_and_nothing_else(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACE[package])
    assert len(module.__all__) == len(set(module.__all__)), "a name listed twice"


@pytest.mark.parametrize("package", sorted(SURFACE))
def test_the_package_holds_no_public_name_outside_all(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:  # lazily exported names are resolved into the module on first use
        assert getattr(module, name) is not None, name
    assert public_names(module) == set(module.__all__)


def test_a_name_exported_by_two_packages_is_one_object() -> None:
    exported: dict[str, list[tuple[str, Any]]] = {}
    for package, names in SURFACE.items():
        module = importlib.import_module(package)
        for name in names:
            exported.setdefault(name, []).append((package, getattr(module, name)))
    for name, owners in exported.items():
        assert len({id(value) for _, value in owners}) == 1, (name, [p for p, _ in owners])


def test_every_public_error_derives_from_the_one_base() -> None:
    for package in SURFACE:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, Exception):
                assert issubclass(value, mcptrace.MCPTraceError), f"{package}.{name}"


def test_every_public_module_is_pinned_here() -> None:
    """A new package or public module is a new front door: it gets its line in SURFACE first."""
    public = {"mcptrace"} | {
        info.name for info in pkgutil.walk_packages(mcptrace.__path__, "mcptrace.")
        if not any(part.startswith("_") for part in info.name.split("."))
    }
    assert public == set(SURFACE)
