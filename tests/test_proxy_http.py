"""`mcptrace proxy --target URL` and `mcptrace proxy --http -- CMD`: Streamable HTTP in front of servers
written elsewhere, with serve's guards, ids, spans, metrics and health.

One server-everything (Streamable HTTP) and one proxy of each kind serve the whole module.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, types
from mcp.shared.exceptions import MCPError

from mcptrace.testing import RunningProcess, initialize_message, running_proxy, running_server, subprocess_env
from tests.guard_clients import add_token, client
from tests.helpers import UNLIMITED, assert_contract, eventually, read_flushed_log, read_log
from tests.otel_receivers import attrs, free_port, hex_id, oteltap
from tests.proxy_targets import FAULTY, TS_CLIENT, everything_command, everything_http, node
from tests.test_log_durability import answered_on_record, assert_every_answer_on_record
from tests.test_proxy_stdio import META_ID, Callbacks, requests_are_closed, text

pytestmark = pytest.mark.slow

BOTH = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with everything_http(tmp_path_factory.mktemp("everything")) as url:
        yield url


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, everything: str) -> Iterator[RunningProcess]:
    with running_proxy(tmp_path_factory.mktemp("proxy"), *UNLIMITED, target=everything) as proc:
        yield proc


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    with running_proxy(tmp_path_factory.mktemp("bridge"), *UNLIMITED, command=everything_command()) as proc:
        yield proc


@pytest.fixture(params=["proxy", "bridge"])
def front(request: pytest.FixtureRequest) -> RunningProcess:
    """Each HTTP mode in turn: the reverse proxy, and a stdio server served over HTTP."""
    proc: RunningProcess = request.getfixturevalue(request.param)
    return proc


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_every_message_kind_passes_through_http(front: RunningProcess, mode: str) -> None:
    answers = Callbacks()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def main() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with anyio.fail_after(60):
            async with Client(front.url, mode=mode, sampling_callback=answers.sampling,
                              elicitation_callback=answers.elicitation, list_roots_callback=answers.roots,
                              logging_callback=answers.logging) as c:
                echo = await c.call_tool("echo", {"message": mode})
                seen["echo"], seen["id"] = text(echo), (echo.meta or {}).get(META_ID)
                await c.call_tool("trigger-long-running-operation", {"duration": 0.3, "steps": 2},
                                  progress_callback=on_progress)
                seen["sampling"] = text(await c.call_tool("trigger-sampling-request", {"prompt": "hi"}))
                seen["elicitation"] = text(await c.call_tool("trigger-elicitation-request", {}))
                seen["roots"] = text(await c.call_tool("get-roots-list", {}))
                await c.set_logging_level("debug")
                await c.call_tool("toggle-simulated-logging", {})
                with anyio.fail_after(10):
                    await answers.logged.wait()
                await c.call_tool("toggle-simulated-logging", {})
        return seen

    seen = anyio.run(main)
    assert seen["echo"] == f"Echo: {mode}" and seen["id"].startswith("req-")
    assert progress and "sampled by the client" in seen["sampling"] and "Ada" in seen["elicitation"]
    assert "file:///tmp/project" in seen["roots"]
    records = read_flushed_log(front.log_file)
    assert_contract(records)
    closed = requests_are_closed(records)
    assert closed[seen["id"]]["status"] == "success" and closed[seen["id"]]["transport"] == "http"
    line = next(r for r in records if r["event"] == "tool_call" and r["mcp_request_id"] == seen["id"])
    assert line["session_id"] and line["arguments_hash"] and line["protocol_version"] == "2025-11-25"


def test_the_typescript_sdk_client_over_http(front: RunningProcess) -> None:
    done = subprocess.run([node(), str(TS_CLIENT), "http", front.url], capture_output=True, text=True, timeout=90,
                          env=subprocess_env())
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in summary, summary["error"]
    assert summary["echo"] == "Echo: from typescript" and summary["requestId"].startswith("req-")
    assert "sampled by the client" in summary["sampling"] and "Ada" in summary["elicitation"]
    assert summary["taskStatuses"][-1] == "completed" and "Research Report" in summary["taskResult"]
    assert summary["progress"] >= 1 and summary["seen"]["logging"] >= 1


def _session(http: httpx.Client, url: str) -> dict[str, str]:
    r = http.post(url, json=initialize_message("raw"), headers=BOTH)
    assert r.status_code == 200, r.text
    session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**BOTH, **session})
    return session


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_each_post_is_answered_in_the_form_its_accept_header_asks_for(front: RunningProcess, accept: str) -> None:
    params = {"name": "echo", "arguments": {"message": "x"}}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    with httpx.Client(timeout=30) as http:
        session = _session(http, front.url)
        r = http.post(front.url, json=call, headers={"accept": accept, "content-type": "application/json", **session})
        assert r.status_code == 200 and r.headers["content-type"].startswith(accept)
        messages = [json.loads(r.text)] if accept == "application/json" else [
            json.loads(line.removeprefix("data: ")) for line in r.text.splitlines() if line.startswith("data: {")]
        answer = next(m for m in messages if m.get("id") == 7)
        assert answer["id"] == 7 and answer["result"]["content"][0]["text"] == "Echo: x"
        assert answer["result"]["_meta"][META_ID] == r.headers["x-request-id"]


# -- nothing acknowledged is lost ------------------------------------------------------------------------


def _call(http: httpx.Client, url: str, call: dict[str, Any], headers: dict[str, str],
          on_answer: Callable[[str], None]) -> httpx.Response:
    """POST `call` and hand the request id of its result to `on_answer` the moment the result arrives: an SSE
    answer as soon as its event is in (as the SDK clients read it), before the stream ends."""
    with http.stream("POST", url, json=call, headers=headers) as r:
        if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
            for line in r.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") and line[5:].strip() else {}
                if message.get("id") == call["id"] and "result" in message:
                    on_answer(message["result"]["_meta"][META_ID])
        else:
            r.read()
            if r.status_code == 200 and "result" in (message := r.json()):
                on_answer(message["result"]["_meta"][META_ID])
    return r


def _on_record(log: Path, seen: list[str], *, then: Callable[[], None] = lambda: None) -> Callable[[str], None]:
    """An `on_answer` that checks, the moment a result arrives, that its request's line is in `log`."""

    def check(request_id: str) -> None:
        then()
        assert request_id in answered_on_record(log), f"answer {len(seen)} left before its line"
        seen.append(request_id)

    return check


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_an_answer_as_json_or_sse_leaves_the_proxy_after_its_line(front: RunningProcess, accept: str) -> None:
    # The log is written to the OS on its own only every 0.2 s: each read here, the moment the answer is
    # in, finds the line only because the proxy wrote it before the answer left.
    with httpx.Client(timeout=30) as http:
        session = _session(http, front.url)
        headers = {"accept": accept, "content-type": "application/json", **session}
        for i in range(12):
            call = {"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": f"m{i}"}}}
            seen: list[str] = []
            r = _call(http, front.url, call, headers, _on_record(front.log_file, seen))
            assert r.headers["content-type"].startswith(accept) and seen == [r.headers["x-request-id"]]


class _Lingering(BaseHTTPRequestHandler):
    """An HTTP MCP endpoint that answers in SSE and keeps a call's stream open after the answer until
    `release` is set (at most `hold` seconds), as a server may that still has something to send."""

    release = threading.Event()
    hold = 10.0

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if "id" not in body:
            self.send_response(202)
            self.end_headers()
            return
        result = {"initialize": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                 "serverInfo": {"name": "lingering", "version": "1"}},
                  }.get(body["method"], {"content": [{"type": "text", "text": "ok"}]})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("mcp-session-id", "lingering-session")
        self.end_headers()
        self.wfile.write(b"data: " + json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
                         + b"\n\n")
        self.wfile.flush()
        if body["method"] == "tools/call":
            type(self).release.wait(type(self).hold)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _lingering(hold: float) -> Iterator[str]:
    """A `_Lingering` endpoint on 127.0.0.1; yields its URL."""
    _Lingering.hold = hold
    _Lingering.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Lingering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        _Lingering.release.set()
        server.shutdown()
        server.server_close()


def test_an_sse_result_is_on_record_while_the_target_still_holds_its_stream(tmp_path: Path) -> None:
    with (
        _lingering(10.0) as target,
        running_proxy(tmp_path / "proxy", *UNLIMITED, target=target) as proc,
        httpx.Client(timeout=30) as http,
    ):
        headers = {"accept": "text/event-stream", "content-type": "application/json", **_session(http, proc.url)}
        for i in range(8):
            _Lingering.release.clear()
            seen: list[str] = []
            call = {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                    "params": {"name": "anything", "arguments": {}}}
            r = _call(http, proc.url, call, headers, _on_record(proc.log_file, seen, then=_Lingering.release.set))
            assert seen == [r.headers["x-request-id"]]


def _call_until_stopped(url: str, n: int, on_answer: Callable[[str], None], stop: threading.Event) -> None:
    """Load thread `n`: its own session, a tool called back to back, SSE or JSON answers by turns of threads."""
    accept = "text/event-stream" if n % 2 == 0 else "application/json"
    try:
        with httpx.Client(timeout=10) as http:
            headers = {"accept": accept, "content-type": "application/json", **_session(http, url)}
            i = 0
            while not stop.is_set():
                i += 1
                call = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"message": f"{n}-{i}"}}}
                _call(http, url, call, headers, on_answer)
    except httpx.HTTPError:
        pass  # the proxy is gone: what was answered before is what counts


class _KillAt:
    """Collects the request ids of the results clients receive, and SIGKILLs the proxy's process group (the
    proxy, and a bridge's servers with it) the moment the `at`-th result is in a client's hands."""

    def __init__(self, pid: int, at: int) -> None:
        self.pid, self.at = pid, at
        self.answered: list[str] = []
        self.killed = threading.Event()
        self.lock = threading.Lock()

    def answer(self, request_id: str) -> None:
        with self.lock:
            self.answered.append(request_id)
            if len(self.answered) == self.at:
                os.killpg(self.pid, signal.SIGKILL)
                self.killed.set()


@contextmanager
def _front_of(mode: str, everything: str, workdir: Path) -> Iterator[RunningProcess]:
    """A proxy in front of server-everything over HTTP, a bridge to it over stdio, or a proxy in front of an
    endpoint that holds each stream open a moment after its answer."""
    if mode == "bridge":
        with running_proxy(workdir, *UNLIMITED, command=everything_command()) as proc:
            yield proc
    elif mode == "proxy":
        with running_proxy(workdir, *UNLIMITED, target=everything) as proc:
            yield proc
    else:
        with _lingering(0.3) as target, running_proxy(workdir, *UNLIMITED, target=target) as proc:
            yield proc


@pytest.mark.parametrize("mode", ["proxy", "bridge", "lingering"])
def test_kill_9_the_moment_a_client_holds_a_result_loses_no_answered_request(
    everything: str, tmp_path: Path, mode: str,
) -> None:
    rng = random.Random(os.environ.get("MCPTRACE_TEST_SEED", time.time_ns()))
    for run in range(4):
        with _front_of(mode, everything, tmp_path / f"run-{run}") as proc:
            killer = _KillAt(proc.process.pid, rng.randint(4, 30))
            stop = threading.Event()
            threads = [threading.Thread(target=_call_until_stopped, args=(proc.url, n, killer.answer, stop),
                                        daemon=True) for n in range(4)]
            for thread in threads:
                thread.start()
            try:
                assert killer.killed.wait(30), f"{len(killer.answered)} answers, the kill waited for {killer.at}"
            finally:
                stop.set()
                for thread in threads:
                    thread.join(30)
            assert proc.process.wait(10) == -signal.SIGKILL
            assert not any(t.is_alive() for t in threads), "a load thread did not stop"
        assert_every_answer_on_record(killer.answered, [proc.log_file])


def test_each_call_is_counted_in_both_duration_histograms_of_metrics(front: RunningProcess) -> None:
    """The tool's and the operation's duration histograms, with the labels `mcptrace serve` gives them."""
    series = {"mcp_tool_duration_seconds_count{": 'tool="echo"',
              "mcp_server_operation_duration_seconds_count{": 'gen_ai_tool_name="echo"'}

    def counts(scrape: str) -> dict[str, float]:
        return {name: sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                          if line.startswith(name) and label in line) for name, label in series.items()}

    params = {"name": "echo", "arguments": {"message": "m"}}
    call = {"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": params}
    with httpx.Client(timeout=30) as http:
        session = _session(http, front.url)
        before = counts(http.get(f"{front.base_url}/metrics").text)
        for _ in range(3):
            assert http.post(front.url, json=call, headers={**BOTH, **session}).status_code == 200
        after = counts(http.get(f"{front.base_url}/metrics").text)
    assert {name: after[name] - before[name] for name in series} == dict.fromkeys(series, 3.0)


def test_what_the_proxy_does_not_understand_is_relayed_unchanged_and_counted(
    everything: str, proxy: RunningProcess,
) -> None:
    odd = {"jsonrpc": "2.0", "x-vendor-extension": {"n": 1}}  # not a request, a notification or a response
    with httpx.Client(timeout=30) as http:
        session = _session(http, everything)
        direct = http.post(everything, json=odd, headers={**BOTH, **session})
        session = _session(http, proxy.url)
        through = http.post(proxy.url, json=odd, headers={**BOTH, **session})
        metrics = http.get(f"{proxy.base_url}/metrics").text
    assert through.status_code == direct.status_code
    assert through.json()["error"]["code"] == direct.json()["error"]["code"]  # the target's own answer
    assert 'mcptrace_proxy_messages_total{direction="to_target",kind="unknown"' in metrics


def test_a_stream_resumes_through_the_proxy_with_last_event_id(proxy: RunningProcess) -> None:
    """The target's event ids pass through, and a GET with `Last-Event-ID` replays what followed."""
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "trigger-long-running-operation", "arguments": {"duration": 0.2, "steps": 2},
                       "_meta": {"progressToken": "resume"}}}
    with httpx.Client(timeout=30) as http:
        session = _session(http, proxy.url)
        first = http.post(proxy.url, json=call, headers={**BOTH, **session})
        ids = [line.removeprefix("id: ") for line in first.text.splitlines() if line.startswith("id: ")]
        assert len(ids) >= 3, first.text  # a priming event, progress, the answer: each with the target's id
        replayed: list[dict[str, Any]] = []
        headers = {**session, "accept": "text/event-stream", "last-event-id": ids[0]}
        with http.stream("GET", proxy.url, headers=headers, timeout=10) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: {"):
                    replayed.append(json.loads(line.removeprefix("data: ")))
                    if replayed[-1].get("id") == 3:
                        break
    assert replayed[-1]["result"]["content"][0]["text"].startswith("Long running operation completed")
    assert any(m.get("method") == "notifications/progress" for m in replayed)


def test_a_host_that_is_not_loopback_is_refused(front: RunningProcess) -> None:
    r = httpx.post(front.url, json=initialize_message("rebinding"), headers={**BOTH, "host": "evil.example:80"})
    assert r.status_code == 421


def test_gate_and_probe_pass_against_the_proxy(front: RunningProcess, tmp_path: Path) -> None:
    args = ["--tool", "echo", "--args", '{"message": "gate"}']
    gate = subprocess.run([sys.executable, "-m", "mcptrace", "gate", front.url, *args, "--json"],
                          capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert all(step["ok"] for step in json.loads(gate.stdout)["steps"])
    probe = subprocess.run([sys.executable, "-m", "mcptrace", "probe", front.url, *args, "--every", "0.2",
                            "--count", "2"], capture_output=True, text=True, timeout=60, env=subprocess_env(),
                           cwd=tmp_path)
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_health_and_metrics_reflect_the_target(proxy: RunningProcess, bridge: RunningProcess) -> None:
    for front in (proxy, bridge):
        r = httpx.get(f"{front.base_url}/health", timeout=10)
        assert r.status_code == 200 and r.json()["checks"]["target"]["status"] == "healthy"
        metrics = httpx.get(f"{front.base_url}/metrics", timeout=10).text
        assert "mcptrace_proxy_target_up{" in metrics and metrics.split("mcptrace_proxy_target_up{")[1].split(
            "}")[1].strip().startswith("1")
        assert 'mcptrace_proxy_messages_total{direction="to_target",kind="request"' in metrics


# -- what the target receives --------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """An HTTP MCP endpoint that answers every request with an empty result and keeps what it received."""

    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        if "id" not in body:
            self.send_response(202)
            self.end_headers()
            return
        result = {
            "initialize": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                           "serverInfo": {"name": "rec", "version": "1"}},
            "tools/list": {"tools": [{"name": "anything", "inputSchema": {"type": "object"}}]},
        }.get(body["method"], {"content": [{"type": "text", "text": "ok"}]})
        answer = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.send_header("mcp-session-id", "rec-session")
        self.end_headers()
        self.wfile.write(answer)

    def do_DELETE(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_target_gets_the_request_id_trace_context_and_caller_but_never_the_proxys_token(tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    token = add_token(store, "agent-acme", "acme")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    target = f"http://127.0.0.1:{server.server_address[1]}/mcp"
    try:
        with oteltap() as tap, running_proxy(
            tmp_path / "proxy", "--tokens", str(store), target=target,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
        ) as proc:

            async def main() -> types.CallToolResult:
                with anyio.fail_after(30):
                    async with client(proc.url, token) as c:
                        return await c.call_tool("anything", {"q": 1})

            result = anyio.run(main)
            request_id = (result.meta or {})[META_ID]
            span = tap.spans.wait_for(lambda s: attrs(s).get("mcptrace.mcp_request_id") == request_id)
    finally:
        server.shutdown()
        thread.join(5)
    headers, body = next((h, b) for h, b in _Recorder.seen if b.get("method") == "tools/call")
    assert "authorization" not in headers
    assert headers["x-request-id"] == request_id
    assert headers["x-mcptrace-caller"] == "agent-acme" and headers["x-mcptrace-tenant"] == "acme"
    ids = [hex_id(span.trace_id), hex_id(span.span_id)]
    assert headers["traceparent"].split("-")[1:3] == ids  # the proxy's span is the target's parent
    assert body["params"]["_meta"]["traceparent"] == headers["traceparent"]
    assert span.name == "tools/call anything" and span.kind == 2  # SERVER
    assert attrs(span)["mcp.method.name"] == "tools/call" and attrs(span)["gen_ai.tool.name"] == "anything"
    assert attrs(span)["mcptrace.tenant"] == "acme" and attrs(span)["mcp.session.id"] == "rec-session"


def test_a_trace_continues_from_the_proxy_into_an_instrumented_target(tmp_path: Path) -> None:
    """`mcptrace serve` behind the proxy logs the proxy's request id and the proxy's span as its parent."""
    with oteltap() as tap, running_server(tmp_path / "serve") as serve, running_proxy(
        tmp_path / "proxy", target=serve.url,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
    ) as proc:

        async def main() -> types.CallToolResult:
            with anyio.fail_after(30):
                async with Client(proc.url, mode="legacy") as c:
                    return await c.call_tool("get_config", {})

        result = anyio.run(main)
        request_id = (result.meta or {})[META_ID]
        span = tap.spans.wait_for(lambda s: attrs(s).get("mcptrace.mcp_request_id") == request_id)
        line = eventually(lambda: _line(serve.log_file, request_id))  # the same id: it came as X-Request-ID
    assert line["trace_id"] == hex_id(span.trace_id) and line["parent_span_id"] == hex_id(span.span_id)


def _line(log: Path, request_id: str) -> dict[str, Any]:
    found = [r for r in read_log(log) if r["event"] == "tool_call" and r["mcp_request_id"] == request_id]
    assert found, f"{request_id} not in the target's log yet"
    return found[0]


# -- guards ----------------------------------------------------------------------------------------------


def test_tokens_rate_limits_and_sessions_bound_to_their_caller(tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    acme, globex = add_token(store, "agent-acme", "acme"), add_token(store, "agent-globex", "globex")
    args = ("--tokens", str(store), "--rate-limit-tools", "*=0.2/3")
    with running_proxy(tmp_path / "bridge", *args, command=[sys.executable, str(FAULTY)]) as proc:
        refused = httpx.post(proc.url, json=initialize_message("anon"), headers=BOTH, timeout=10)
        assert refused.status_code == 401 and "resource_metadata" in refused.headers["www-authenticate"]
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {acme}"}) as http:
            session = _session(http, proc.url)
            codes = []
            for i in range(5):
                call = {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"message": "again"}}}
                codes.append(http.post(proc.url, json=call, headers={**BOTH, **session}).status_code)
            assert codes[:3] == [200, 200, 200] and codes[3] == 429
        stolen = httpx.post(proc.url, headers={**BOTH, **session, "authorization": f"Bearer {globex}"}, timeout=10,
                            json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"})
        assert stolen.status_code == 404  # another caller's session does not exist for this caller
        records = read_flushed_log(proc.log_file)
    assert_contract(records)
    refusals = {(r["refusal_reason"], r["http_status"]): r for r in records if r["event"] == "request_refused"}
    assert {("unauthenticated", 401), ("rate_limited", 429), ("forbidden", 404)} <= set(refusals)
    stolen_line = refusals[("forbidden", 404)]  # the guards in front judged the session: serve's rule, serve's line
    assert stolen_line["caller_id"] == "agent-globex" and stolen_line["session_owner"] != stolen_line["principal"]
    calls = [r for r in records if r["event"] == "tool_call"]
    assert {r["caller_id"] for r in calls} == {"agent-acme"} and {r["tenant"] for r in calls} == {"acme"}


def test_a_target_session_opened_through_the_proxy_belongs_to_its_caller(everything: str, tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    acme, globex = add_token(store, "agent-acme", "acme"), add_token(store, "agent-globex", "globex")
    with running_proxy(tmp_path / "proxy", "--tokens", str(store), target=everything) as proc:
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {acme}"}) as http:
            session = _session(http, proc.url)
            ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
            assert http.post(proc.url, json=ping, headers={**BOTH, **session}).status_code == 200
        stolen = httpx.post(proc.url, json=ping, headers={**BOTH, **session, "authorization": f"Bearer {globex}"},
                            timeout=10)
        assert stolen.status_code == 404


# -- faults -----------------------------------------------------------------------------------------------


def test_a_target_that_is_down_opens_the_breaker_and_health_says_so(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    env = {"MCPTRACE_HEALTH_CACHE_SECONDS": "0"}
    with running_proxy(tmp_path, *UNLIMITED, target=dead, env=env) as proc, httpx.Client(timeout=10) as http:
        messages = []
        for i in range(7):
            r = http.post(proc.url, json=initialize_message("breaker", msg_id=i), headers=BOTH)
            messages.append(r.json()["error"]["message"])
        assert messages[0] == "target: unreachable (ConnectError)"
        assert messages[-1].startswith("target: unavailable (circuit open")
        health = http.get(f"{proc.base_url}/health")
        assert health.status_code == 503 and health.json()["checks"]["target"]["status"] == "unhealthy"
        assert health.json()["checks"]["breakers"]["states"] == {"target": "open"}
        metrics = http.get(f"{proc.base_url}/metrics").text
        assert "mcptrace_proxy_target_up{" in metrics and metrics.split("mcptrace_proxy_target_up{")[1].split(
            "}")[1].strip().startswith("0")
        records = read_flushed_log(proc.log_file)
    assert_contract(records)
    assert any(r["event"] == "breaker_state_changed" and r["breaker_state"] == "open" for r in records)


def test_a_bridged_server_that_dies_is_restarted_within_its_session(tmp_path: Path) -> None:
    env = {"MCPTRACE_RESTART_BACKOFF": "0.05"}
    with running_proxy(tmp_path, *UNLIMITED, command=[sys.executable, str(FAULTY)], env=env) as proc:

        async def main() -> tuple[Any, Any]:
            with anyio.fail_after(60):
                async with Client(proc.url, mode="legacy") as c:
                    try:
                        await c.call_tool("crash", {"status": 5})
                        crashed: Any = None
                    except MCPError as exc:
                        crashed = exc
                    for _ in range(100):
                        try:
                            return crashed, await c.call_tool("echo", {"message": "alive"})
                        except MCPError:
                            await anyio.sleep(0.05)
            raise AssertionError("never came back")

        crashed, after = anyio.run(main)
        records = read_flushed_log(proc.log_file)
    assert isinstance(crashed, MCPError) and "exited with status 5" in str(crashed)
    assert text(after) == "alive"
    assert any(r["event"] == "target_exited" and r["exit_code"] == 5 for r in records)
