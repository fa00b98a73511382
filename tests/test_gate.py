"""`mcptrace gate` and `mcptrace probe` against the real server (and against nothing at all)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from mcptrace import _fields as f
from mcptrace.cli import main
from mcptrace.gate import Alerting, GateOptions, Probe, run_gate
from mcptrace.telemetry._log import EventLogger, LogSink
from mcptrace.testing import RunningProcess
from tests.helpers import assert_contract, read_log


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> its data points, from everything the reader has collected."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: list(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def dead_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mcp"


class TestGate:
    def test_a_healthy_server_passes_every_step(
        self, server: RunningProcess, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["gate", server.url, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is True
        assert [s["name"] for s in report["steps"]] == ["initialize", "initialized", "list_tools", "tool"]
        assert all(s["ok"] and s["duration_ms"] > 0 for s in report["steps"])
        assert report["server"]["name"] == "mcptrace"
        assert report["protocol_version"] == "2025-11-25"

    def test_streaming_check_passes_when_events_arrive_live(self, server: RunningProcess) -> None:
        report = anyio.run(run_gate, server.url, GateOptions(check_streaming=True))
        assert report.ok, report.lines()
        assert "progress events" in report.steps[-1].detail

    def test_a_named_tool_with_arguments_is_called(self, server: RunningProcess) -> None:
        args = ["gate", server.url, "--tool", "search_database", "--args", '{"query": "anvil", "limit": 1}']
        assert main(args) == 0

    def test_a_failing_tool_fails_the_tool_step_with_its_reason(
        self,
        server: RunningProcess,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        assert main(["gate", server.url, "--tool", "no_such_tool"]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("FAIL tool") and "no_such_tool" in err[0]

    def test_nothing_listening_fails_initialize_in_one_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["gate", dead_url(), "--timeout", "5"]) == 1
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and captured.err.startswith("FAIL initialize")
        assert "Traceback" not in captured.err
        assert captured.out.startswith("FAIL ")

    def test_a_server_that_never_answers_fails_within_the_step_timeout(self) -> None:
        with socket.socket() as silent:  # accepts connections (backlog) and never says a word
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
            started = time.monotonic()
            report = anyio.run(run_gate, url, GateOptions(timeout=1))
            elapsed = time.monotonic() - started
        assert not report.ok and report.steps[0].name == "initialize"
        assert report.steps[0].detail.startswith("no answer within 1s")
        assert elapsed < 15

    def test_a_url_that_is_not_mcp_names_the_http_status(self, server: RunningProcess) -> None:
        report = anyio.run(run_gate, server.base_url + "/livez", GateOptions(timeout=5))
        assert not report.ok
        assert report.failed_step is not None and report.failed_step.name == "initialize"
        assert "HTTP 405" in report.failed_step.detail

    def test_bad_flags_are_clear_errors(
        self, server: RunningProcess, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["gate", server.url, "--token-env", "MCPTRACE_TEST_UNSET_TOKEN"]) == 2
        assert main(["gate", server.url, "--args", "{not json"]) == 2
        assert main(["gate", server.url, "--args", "[1]"]) == 2
        assert main(["gate", "mcp.example.com/mcp"]) == 2
        assert main(["gate", server.url, "--timeout", "0"]) == 2
        err = capsys.readouterr().err
        assert "MCPTRACE_TEST_UNSET_TOKEN" in err and "not valid JSON" in err and "JSON object" in err
        assert "not an http:// or https://" in err and "--timeout must be" in err


class _Collector(BaseHTTPRequestHandler):
    bodies: list[dict[str, object]]
    arrived: threading.Event

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length", "0"))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Collector]]]:
    handler = type("Collector", (_Collector,), {"bodies": [], "arrived": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/alert", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


class TestProbe:
    def test_each_run_is_one_contract_log_line(self, server: RunningProcess, tmp_path: Path) -> None:
        log = tmp_path / "probe.log"
        assert main(["probe", server.url, "--every", "0.1", "--count", "2", "--log-file", str(log)]) == 0
        records = read_log(log)
        assert_contract(records)
        assert [r[f.EVENT] for r in records] == [f.EV_PROBE_RESULT] * 2
        assert all(r[f.STATUS] == f.SUCCESS and r[f.CONSECUTIVE_FAILURES] == 0 for r in records)
        assert all(r[f.FAILING_SECONDS] == 0 and r[f.PROBE_URL] == server.url for r in records)

    def test_an_outage_is_timed_and_alerted_once(
        self,
        tmp_path: Path,
        webhook: tuple[str, type[_Collector]],
    ) -> None:
        url, collector = webhook
        log, marker = tmp_path / "probe.log", tmp_path / "alerts.txt"
        command = f'echo "$MCPTRACE_PROBE_FAILURES $MCPTRACE_PROBE_URL" >> {marker}'
        code = main(
            [
                "probe",
                dead_url(),
                "--every",
                "0.1",
                "--count",
                "4",
                "--timeout",
                "5",
                "--alert-after",
                "2",
                "--on-failure",
                command,
                "--webhook",
                url,
                "--log-file",
                str(log),
            ]
        )
        assert code == 1
        records = read_log(log)
        assert_contract(records)
        results = [r for r in records if r[f.EVENT] == f.EV_PROBE_RESULT]
        assert [r[f.CONSECUTIVE_FAILURES] for r in results] == [1, 2, 3, 4]
        assert all(r[f.FAILED_STEP] == "initialize" and r[f.LEVEL] == "error" for r in results)
        seconds = [float(r[f.FAILING_SECONDS]) for r in results]  # type: ignore[arg-type]
        assert seconds[0] == 0 and seconds == sorted(seconds) and seconds[-1] > 0.2
        assert len({r[f.FAILING_SINCE] for r in results}) == 1
        # The hooks ran once for the outage, after the second failure.
        assert marker.read_text().split() == ["2", results[0][f.PROBE_URL]]
        assert collector.arrived.wait(5)
        assert len(collector.bodies) == 1 and collector.bodies[0]["consecutive_failures"] == 2
        alerts = [r for r in records if r[f.EVENT] == f.EV_PROBE_ALERT]
        assert sorted(str(r[f.MESSAGE]) for r in alerts) == ["command alert sent", "webhook alert sent"]

    def test_metrics_count_runs_and_how_long_it_has_been_failing(self) -> None:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        url = dead_url()
        probe = Probe(url, GateOptions(timeout=5), logger=EventLogger(LogSink(None)), meter_provider=provider)

        async def runs() -> None:
            with anyio.fail_after(30):
                await probe.run(every=0.05, count=3)

        anyio.run(runs)
        points = metric_points(reader)
        runs_by_status = {dict(p.attributes)[f.STATUS]: p.value for p in points[f.M_PROBE_RUNS]}
        assert runs_by_status == {f.FAILURE: 3}
        assert [p.value for p in points[f.M_PROBE_CONSECUTIVE_FAILURES]] == [3]
        assert points[f.M_PROBE_FAILING_SECONDS][0].value > 0.05
        assert probe.state.failures == 3 and probe.state.alerts_sent == 1
        assert Alerting().after == 3
