"""The shipped nginx and Caddy configurations, run for real in front of the real server over TLS."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from mcptrace import _fields as f
from mcptrace.gate import GateOptions, run_gate
from mcptrace.testing import RunningProcess, initialize_message
from tests.helpers import read_log
from tests.proxies import DEPLOY, Certificate, Proxy, make_certificate, running_caddy, running_nginx

SSE = "text/event-stream"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls(cert: Certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert.cert))


@pytest.fixture(scope="module")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, server: RunningProcess, cert: Certificate
) -> Iterator[Proxy]:
    with running_nginx(tmp_path_factory.mktemp("nginx"), server_url=server.url, cert=cert) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def caddy(
    tmp_path_factory: pytest.TempPathFactory, server: RunningProcess, cert: Certificate
) -> Iterator[Proxy]:
    with running_caddy(tmp_path_factory.mktemp("caddy"), server_url=server.url, cert=cert) as proxy:
        yield proxy


def report_arrivals(url: str, tls: ssl.SSLContext) -> tuple[list[float], float, str]:
    """Call run_report over SSE through `url`; (progress arrival times, end time, request id)."""
    init = initialize_message("proxy-test")
    with httpx.Client(verify=tls, timeout=30, headers={"accept": f"application/json, {SSE}"}) as client:
        r = client.post(url, json=init)
        assert r.status_code == 200, r.text
        session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        note = client.post(
            url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        assert note.status_code == 202
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "run_report", "arguments": {}, "_meta": {"progressToken": "p"}},
        }
        progress: list[float] = []
        start = time.monotonic()
        with client.stream("POST", url, json=call, headers=session) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(SSE)
            assert "no-cache" in response.headers.get("cache-control", "")
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if "notifications/progress" in line:
                    progress.append(time.monotonic() - start)
        return progress, time.monotonic() - start, request_id


def wait_for_log_line(log: Path, request_id: str, timeout: float = 10.0) -> list[dict[str, object]]:
    """The server's log lines for `request_id`, once its `tool_call` line is flushed (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [r for r in read_log(log) if r.get(f.REQUEST_ID) == request_id] if log.exists() else []
        if any(r[f.EVENT] == f.EV_TOOL_CALL for r in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


class TestNginx:
    def test_events_stream_live_through_nginx(self, nginx: Proxy, tls: ssl.SSLContext) -> None:
        progress, end, _ = report_arrivals(nginx.url, tls)
        assert len(progress) >= 3
        assert end - progress[0] > 0.9, (progress, end)

    def test_nginx_request_id_is_on_the_server_log_lines(
        self,
        nginx: Proxy,
        server: RunningProcess,
        tls: ssl.SSLContext,
    ) -> None:
        _, _, request_id = report_arrivals(nginx.url, tls)
        assert len(request_id) == 32 and int(request_id, 16) >= 0  # nginx's $request_id: 32 hex digits
        lines = wait_for_log_line(server.log_file, request_id)
        assert {r[f.EVENT] for r in lines} >= {f.EV_TOOL_CALL}
        assert all(r[f.REQUEST_ID] == request_id for r in lines)

    def test_only_the_mcp_route_and_health_are_exposed(self, nginx: Proxy, tls: ssl.SSLContext) -> None:
        base = nginx.url.removesuffix("/mcp")
        health = httpx.get(f"{base}/health", verify=tls, timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert len(health.headers["x-request-id"]) == 32
        assert httpx.get(f"{base}/livez", verify=tls, timeout=10).status_code == 404

    def test_the_gate_passes_with_its_streaming_check(self, nginx: Proxy, cert: Certificate) -> None:
        report = anyio.run(run_gate, nginx.url, GateOptions(check_streaming=True, verify=str(cert.cert)))
        assert report.ok, report.lines()

    def test_the_gate_catches_a_buffering_nginx(
        self,
        tmp_path: Path,
        server: RunningProcess,
        cert: Certificate,
    ) -> None:
        shipped = (DEPLOY / "nginx" / "mcptrace.conf").read_text()
        # nginx's defaults, with the server's `X-Accel-Buffering: no` ignored as a careless config would.
        buffering = shipped.replace(
            "proxy_buffering off;",
            "proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;",
        )
        assert buffering != shipped
        with running_nginx(tmp_path, server_url=server.url, cert=cert, site=buffering) as proxy:
            report = anyio.run(run_gate, proxy.url, GateOptions(check_streaming=True, verify=str(cert.cert)))
        assert not report.ok
        failed = report.failed_step
        assert failed is not None and failed.name == "streaming"
        assert "only at the end" in failed.detail

    def test_the_gate_speaks_to_a_route_that_answers_json(
        self, tmp_path: Path, server: RunningProcess, cert: Certificate
    ) -> None:
        shipped = (DEPLOY / "nginx" / "mcptrace.conf").read_text()
        # A route that only ever asks for JSON: every answer is one JSON body, progress has nowhere to go.
        json_only = shipped.replace(
            "proxy_set_header X-Request-ID $request_id;",
            'proxy_set_header X-Request-ID $request_id;\n        proxy_set_header Accept "application/json";',
            1,
        )
        with running_nginx(tmp_path, server_url=server.url, cert=cert, site=json_only) as proxy:
            report = anyio.run(run_gate, proxy.url, GateOptions(check_streaming=True, verify=str(cert.cert)))
        assert [(s.name, s.ok) for s in report.steps] == [
            ("initialize", True),
            ("initialized", True),
            ("list_tools", True),
            ("tool", True),
            ("streaming", False),
        ]
        assert "reported no progress" in report.steps[-1].detail

    def test_a_bearer_token_from_the_environment_reaches_the_server(
        self,
        tmp_path: Path,
        server: RunningProcess,
        cert: Certificate,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        shipped = (DEPLOY / "nginx" / "mcptrace.conf").read_text()
        guarded = shipped.replace(
            "location = /mcp {",
            'location = /mcp {\n        if ($http_authorization != "Bearer s3cret") { return 401; }',
        )
        from mcptrace.cli import main

        with running_nginx(tmp_path, server_url=server.url, cert=cert, site=guarded) as proxy:
            denied = anyio.run(run_gate, proxy.url, GateOptions(verify=str(cert.cert)))
            monkeypatch.setenv("MCPTRACE_TEST_TOKEN", "s3cret")
            code = main(["gate", proxy.url, "--token-env", "MCPTRACE_TEST_TOKEN", "--cacert", str(cert.cert)])
        assert not denied.ok and "HTTP 401" in denied.steps[0].detail
        assert code == 0


class TestCaddy:
    def test_events_stream_live_through_caddy(self, caddy: Proxy, tls: ssl.SSLContext) -> None:
        progress, end, _ = report_arrivals(caddy.url, tls)
        assert len(progress) >= 3
        assert end - progress[0] > 0.9, (progress, end)

    def test_caddy_request_id_is_on_the_server_log_lines(
        self,
        caddy: Proxy,
        server: RunningProcess,
        tls: ssl.SSLContext,
    ) -> None:
        _, _, request_id = report_arrivals(caddy.url, tls)
        assert len(request_id) == 36  # Caddy's {http.request.uuid}
        assert wait_for_log_line(server.log_file, request_id)

    def test_the_gate_passes_with_its_streaming_check(self, caddy: Proxy, cert: Certificate) -> None:
        report = anyio.run(run_gate, caddy.url, GateOptions(check_streaming=True, verify=str(cert.cert)))
        assert report.ok, report.lines()

    def test_a_body_sent_slowly_reaches_the_server_whole(self, caddy: Proxy, tls: ssl.SSLContext) -> None:
        init = json.dumps(initialize_message("slow-body")).encode()

        def trickle() -> Iterator[bytes]:
            for i in range(0, len(init), 16):
                time.sleep(0.02)
                yield init[i : i + 16]

        headers = {"accept": f"application/json, {SSE}", "content-type": "application/json"}
        r = httpx.post(caddy.url, content=trickle(), headers=headers, verify=tls, timeout=30)
        assert r.status_code == 200, r.text
        assert "mcp-session-id" in r.headers

    def test_a_body_announced_past_2_mib_is_refused_at_caddy(self, caddy: Proxy, tls: ssl.SSLContext) -> None:
        body = b"x" * (2 * 1024 * 1024 + 1)
        r = httpx.post(caddy.url, content=body, verify=tls, timeout=30)
        assert r.status_code == 413
        assert "x-request-id" not in r.headers  # answered by Caddy, never forwarded
