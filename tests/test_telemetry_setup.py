"""How telemetry is configured: `OTEL_*` variables, the guard registration point, the public API."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

import mcptrace
from mcptrace import ConfigError
from mcptrace.telemetry import _metrics
from mcptrace.telemetry._metrics import TOOL_DURATION_BUCKETS, ServerMetrics, register_guard_metrics
from mcptrace.telemetry._otlp import (
    logs_export_enabled,
    make_resource,
    metrics_export_enabled,
    providers_from_env,
    traces_enabled,
)
from mcptrace.telemetry._prometheus import PrometheusEndpoint
from mcptrace.testing import subprocess_env
from tests.otel_receivers import attrs, oteltap, points

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


def test_traces_follow_the_standard_variables() -> None:
    assert not traces_enabled({})
    assert traces_enabled(ENDPOINT)
    assert traces_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert traces_enabled({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not traces_enabled({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"})
    assert not traces_enabled({**ENDPOINT, "OTEL_SDK_DISABLED": "true"})


def test_metrics_export_needs_an_endpoint_and_logs_export_is_opt_in() -> None:
    assert not metrics_export_enabled({})
    assert metrics_export_enabled(ENDPOINT)
    assert not metrics_export_enabled({**ENDPOINT, "OTEL_METRICS_EXPORTER": "none"})
    assert not logs_export_enabled(ENDPOINT)
    assert logs_export_enabled({**ENDPOINT, "OTEL_LOGS_EXPORTER": "otlp"})


def test_an_unsupported_protocol_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="http/json"):
        providers_from_env({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_the_span_queue_is_bounded_by_the_standard_variable_and_what_it_drops_is_counted() -> None:
    from mcptrace.telemetry._context import CallContext
    from mcptrace.telemetry._drops import DropCounter
    from mcptrace.telemetry._spanfeed import SpanFeed, feed_settings

    taken: list[int] = []
    drops = DropCounter()
    settings = feed_settings({"OTEL_BSP_MAX_QUEUE_SIZE": "3", "OTEL_BSP_SCHEDULE_DELAY": "60000"})
    assert settings == {"max_queue": 3, "delay_ms": 60000.0}
    feed = SpanFeed(lambda items: taken.append(len(items)), drops, **settings)
    for i in range(5):
        call = CallContext(f"req-{i}")
        call.client_spans = [(1, 2, "db", None, 0, 1, None, None)]  # a SERVER span and a CLIENT span each
        feed.put(call)
    feed.shutdown()
    assert taken == [3]
    assert drops.snapshot() == {("traces", "queue_full"): 4}


def _exemplars_recorded(env: dict[str, str]) -> int:
    """Exemplars a histogram keeps for one measurement made inside a sampled span."""
    reader = InMemoryMetricReader()
    providers = providers_from_env(env, extra_readers=[reader])
    assert providers.meter_provider is not None
    histogram = providers.meter_provider.get_meter("test").create_histogram("work")
    with TracerProvider().get_tracer("test").start_as_current_span("request"):
        histogram.record(0.01)
    data = reader.get_metrics_data()
    providers.shutdown()
    assert data is not None
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              for p in m.data.data_points]
    assert len(points) == 1
    return len(points[0].exemplars)


def test_exemplars_are_off_unless_the_standard_variable_asks_for_them() -> None:
    assert _exemplars_recorded({}) == 0
    assert _exemplars_recorded({"OTEL_METRICS_EXEMPLAR_FILTER": "trace_based"}) == 1
    with pytest.raises(ConfigError, match="sometimes"):
        providers_from_env({"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"})


def test_serve_refuses_an_unsupported_protocol_without_a_traceback(tmp_path: Path) -> None:
    env = subprocess_env({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})
    proc = subprocess.run(
        [sys.executable, "-m", "mcptrace", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "carrier-pigeon" in proc.stderr and "Traceback" not in proc.stderr


def test_the_resource_is_named_by_otel_service_name_or_mcptrace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert make_resource().attributes["service.name"] == "mcptrace"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-mcp")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    attributes = make_resource().attributes
    assert attributes["service.name"] == "orders-mcp"
    assert attributes["deployment.environment"] == "staging"
    assert attributes["service.version"] == mcptrace.__version__
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.version=4.2.0")
    assert make_resource().attributes["service.version"] == "4.2.0"  # the operator's variable wins


def test_duration_buckets_resolve_milliseconds_to_minutes() -> None:
    assert list(TOOL_DURATION_BUCKETS) == sorted(TOOL_DURATION_BUCKETS)
    assert TOOL_DURATION_BUCKETS[0] <= 0.001 and TOOL_DURATION_BUCKETS[-1] >= 300
    # no gap wider than 2.5x between neighbours: a quantile lands in a bucket of its own magnitude
    assert all(b / a <= 2.5 for a, b in zip(TOOL_DURATION_BUCKETS, TOOL_DURATION_BUCKETS[1:], strict=False))


@dataclass
class Guards:
    auth_failures: int = 0
    rate_limited: int = 0
    breaker_states: dict[str, int] = field(default_factory=dict)


def _samples(endpoint: PrometheusEndpoint) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(endpoint.render().decode()):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope")))
            out[(s.name, labels)] = s.value
    return out


def test_guard_counters_are_published_when_metrics_are_collected() -> None:
    endpoint = PrometheusEndpoint()
    provider = MeterProvider(metric_readers=[endpoint.reader])
    guards = Guards()
    assert isinstance(guards, mcptrace.GuardCounters)
    register_guard_metrics(provider.get_meter("test"), guards)
    guards.auth_failures, guards.rate_limited = 3, 7
    guards.breaker_states["upstream"] = 2
    samples = _samples(endpoint)
    assert samples[("mcptrace_auth_failures_total", ())] == 3
    assert samples[("mcptrace_rate_limit_rejections_total", ())] == 7
    assert samples[("mcptrace_breaker_state", (("service", "upstream"),))] == 2
    provider.shutdown()


def test_tool_metrics_use_the_checklist_names_and_labels() -> None:
    endpoint = PrometheusEndpoint()
    provider = MeterProvider(metric_readers=[endpoint.reader])
    metrics = ServerMetrics(provider.get_meter("test"))
    for duration in (0.002, 0.004, 0.3):
        metrics.record_tool_call("search", "success", duration)
    metrics.record_tool_call("search", "error", 1.5)
    metrics.record_downstream_error("postgres")
    samples = _samples(endpoint)
    assert samples[("mcp_tool_calls_total", (("status", "success"), ("tool", "search")))] == 3
    assert samples[("mcp_tool_calls_total", (("status", "error"), ("tool", "search")))] == 1
    assert samples[("mcp_tool_duration_seconds_bucket", (("le", "0.005"), ("status", "success"),
                                                         ("tool", "search")))] == 2
    assert samples[("mcp_downstream_errors_total", (("service", "postgres"),))] == 1
    provider.shutdown()


def test_tool_names_past_the_series_limit_are_counted_under_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_metrics, "MAX_TOOL_SERIES", 4)  # two tools, each with both outcomes
    endpoint = PrometheusEndpoint()
    provider = MeterProvider(metric_readers=[endpoint.reader])
    metrics = ServerMetrics(provider.get_meter("test"))
    for tool in ("search", "fetch", "made-up-1", "made-up-2", "search"):
        metrics.record_tool_call(tool, "success", 0.01)
    # Prometheus renders a label some series lack as "": keep the labels each series has.
    samples = {(name, tuple(kv for kv in labels if kv[1])): value
               for (name, labels), value in _samples(endpoint).items()}
    assert samples[("mcp_tool_calls_total", (("status", "success"), ("tool", "search")))] == 2
    assert samples[("mcp_tool_calls_total", (("status", "success"), ("tool", "fetch")))] == 1
    assert samples[("mcp_tool_calls_total", (("otel_metric_overflow", "true"),))] == 2
    assert samples[("mcp_tool_duration_seconds_count", (("otel_metric_overflow", "true"),))] == 2
    provider.shutdown()


def test_instrument_is_public_and_importing_mcptrace_stays_light() -> None:
    public = {"instrument", "Instrumentation", "register_guard_metrics", "GuardCounters"}
    assert public <= set(mcptrace.__all__)
    assert callable(mcptrace.instrument)
    code = ("import sys, mcptrace; heavy = [m for m in ('mcp', 'starlette', 'uvicorn', 'opentelemetry') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("preference", ["cumulative", "delta"])
def test_otlp_metrics_share_the_prometheus_aggregation_when_the_exporter_wants_cumulative_data(
    preference: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with oteltap() as tap:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tap.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference)
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
        endpoint = PrometheusEndpoint()
        reader = endpoint.reader
        providers = providers_from_env(extra_readers=[reader], export_from=(reader, reader.snapshot))
        # one aggregation feeds both outputs; a delta exporter gets a reader of its own
        assert (providers.metric_export is not None) == (preference == "cumulative")
        metrics = ServerMetrics(providers.meter_provider.get_meter("test"))
        for duration in (0.002, 0.004, 0.3):
            metrics.record_tool_call("search", "success", duration)
        tap.metrics.wait_for(lambda m: m.name == "mcp_tool_duration_seconds" and any(
            attrs(p).get("tool") == "search" and p.count == 3 for p in points(m)))
        samples = _samples(endpoint)
        assert samples[("mcp_tool_duration_seconds_count", (("status", "success"), ("tool", "search")))] == 3
        assert samples[("mcp_tool_calls_total", (("status", "success"), ("tool", "search")))] == 3
        providers.shutdown()


def test_the_dependencies_the_request_path_relies_on_are_pinned_below_untested_releases() -> None:
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    for name in ("mcp", "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp",
                 "opentelemetry-exporter-prometheus"):
        specifier = requirements[name].specifier
        assert any(spec.operator == "<" for spec in specifier), f"{name} has no upper bound"
        assert version(name) in specifier, f"{name} {version(name)} is not what the pins allow: {specifier}"
