"""Nothing acknowledged is lost: an answered request's lines are in the log before its answer leaves.

The invariant is checked two ways. Directly, on every transport: the moment a
client holds an answer, the log file already holds that request's line
(`tool_call` or `response_sent`; the writer flushes on its own only every 0.2 s, so
without the write-before-answer rule these reads would miss it). And end to
end: the real server (and a user's server under `instrument()`, and one replica
of two behind nginx) is killed with SIGKILL at a random moment under load from
several threads, and every request whose answer the client received is found
in the log. `serve --stdio` is run 100 times with a script that ends in EOF
right after its last request: every request gets its reply on stdout.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from mcptrace.analysis import load
from mcptrace.testing import initialize_message, running_server
from tests.helpers import UNLIMITED, read_log
from tests.proxies import free_port, running_balancer
from tests.user_server import running_user_server

MODERN = "2026-07-28"
JSON = "application/json"
BOTH = "application/json, text/event-stream"
META_ID = "mcptrace/mcp_request_id"


def answered_on_record(log: Path) -> set[str]:
    """Request ids with a closing line (`tool_call`, `response_sent`) in the complete lines of `log` and its
    rotated files."""
    ids: set[str] = set()
    for path in sorted(log.parent.glob(log.name + "*")):
        text = path.read_bytes()
        for line in text[: text.rfind(b"\n") + 1].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") in ("response_sent", "tool_call"):
                ids.add(record["mcp_request_id"])
    return ids


# -- the invariant, read the moment each answer arrives ----------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with running_server(tmp_path_factory.mktemp("durable"), *UNLIMITED) as srv:
        yield srv


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_the_sdk_client_never_holds_an_answer_the_log_lacks(server, mode: str) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(server.url, mode=mode) as client:  # type: ignore[arg-type]
                for i in range(15):
                    result = await client.call_tool("search_database", {"query": "anvil", "limit": 1 + i % 3})
                    request_id = result.meta[META_ID]  # type: ignore[index]
                    assert request_id in answered_on_record(server.log_file), f"answer {i} before its line"

    anyio.run(main)


@pytest.mark.parametrize("accept", [JSON, "text/event-stream"])
def test_a_raw_answer_as_json_or_sse_follows_its_line(server, accept: str) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(timeout=15, headers={"accept": BOTH}) as http:
        r = http.post(server.url, json=initialize_message("raw"))
        session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25",
                   "accept": accept}
        http.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        for i in range(10):
            call = {"jsonrpc": "2.0", "id": i + 2, "method": "tools/call",
                    "params": {"name": "ping", "arguments": {}}}
            r = http.post(server.url, json=call, headers=session)
            assert r.status_code == 200 and r.headers["content-type"].startswith(accept)
            assert r.headers["x-request-id"] in answered_on_record(server.log_file)


def test_a_refused_get_or_post_is_on_record_before_its_answer_ends(server) -> None:  # type: ignore[no-untyped-def]
    def rejected() -> set[str]:
        return {r["mcp_request_id"] for r in read_log(server.log_file) if r["event"] == "request_rejected"}

    with httpx.Client(timeout=15) as http:
        for _ in range(5):
            r = http.get(server.url, headers={"accept": "text/event-stream"})  # a GET stream with no session
            assert r.status_code >= 400 and r.headers["x-request-id"] in rejected()
            r = http.post(server.url, content=b"{", headers={"accept": BOTH, "content-type": JSON})
            assert r.status_code == 400 and r.headers["x-request-id"] in rejected()


def test_an_instrumented_user_server_writes_before_it_answers(tmp_path: Path) -> None:
    with running_user_server(tmp_path) as (url, _, log):

        async def main() -> None:
            with anyio.fail_after(30):
                for mode in ("legacy", MODERN):
                    async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
                        for i in range(8):
                            result = await client.call_tool("stock", {"item": f"bolt-{i}"})
                            assert result.meta[META_ID] in answered_on_record(log)  # type: ignore[index]

        anyio.run(main)


# -- kill -9 under load -------------------------------------------------------------------------------


@dataclass
class Load:
    """Threads calling a tool back to back until stopped or cut off; `answered` holds the ids they got back."""

    url: str
    tool: str
    arguments: Callable[[int], dict[str, Any]]
    #: Every thread speaks the sessionless era (replicas behind a proxy without session affinity).
    sessionless: bool = False
    answered: list[str] = field(default_factory=list)
    #: Calls cut off by the kill: sent, and the connection died before their answer came.
    cut: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def caller(self, n: int) -> None:
        """Thread `n`: odd threads speak the sessionless 2026-07-28 era, even ones open a session;
        half ask for JSON answers, half accept SSE."""
        modern, accept = self.sessionless or n % 2 == 1, JSON if n % 4 < 2 else BOTH
        try:
            with httpx.Client(timeout=10, headers={"accept": accept}) as http:
                headers = {} if modern else self._open_session(http)
                i = 0
                while not self.stop.is_set():
                    i += 1
                    request_id = self._call(http, headers, i, modern=modern)
                    if request_id is not None:  # else refused (a proxy's 502 for a replica that died)
                        self.answered.append(request_id)
        except httpx.HTTPError:
            self.cut.append(n)  # the server is gone mid-call: what was answered before is what counts

    def _open_session(self, http: httpx.Client) -> dict[str, str]:
        r = http.post(self.url, json=initialize_message("load"))
        headers = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        http.post(self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        return headers

    def _call(self, http: httpx.Client, headers: dict[str, str], i: int, *, modern: bool) -> str | None:
        params: dict[str, Any] = {"name": self.tool, "arguments": self.arguments(i)}
        if modern:
            params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                               "io.modelcontextprotocol/clientCapabilities": {},
                               "io.modelcontextprotocol/clientInfo": {"name": "load", "version": "1"}}
            headers = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": self.tool}
        r = http.post(self.url, json={"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params},
                      headers=headers)
        if r.status_code != 200:
            return None
        if r.headers["content-type"].startswith("text/event-stream"):
            messages = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
            message = next((m for m in messages if m.get("id") == i), {})
        else:
            message = r.json()
        result = message.get("result")
        return result["_meta"][META_ID] if result is not None else None

    def run_until(self, deadline: Callable[[], None], threads: int = 8) -> None:
        """Start the callers, call `deadline()` (which kills something), let them run out, join them."""
        workers = [threading.Thread(target=self.caller, args=(n,), daemon=True) for n in range(threads)]
        for worker in workers:
            worker.start()
        try:
            deadline()
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(30)
        assert not any(w.is_alive() for w in workers), "a load thread did not stop"

    def kill_after(self, pid: int, seconds: float, *, answers: int = 8) -> Callable[[], None]:
        """A deadline for `run_until`: once `answers` calls were answered, `seconds` more, then SIGKILL `pid`."""

        def deadline() -> None:
            limit = time.monotonic() + 20
            while len(self.answered) <= answers:
                assert time.monotonic() < limit, "no call was answered"
                time.sleep(0.01)
            time.sleep(seconds)
            os.kill(pid, signal.SIGKILL)

        return deadline


def assert_every_answer_on_record(answered: list[str], logs: list[Path]) -> None:
    assert answered, "the load got no answer at all"
    on_record = set().union(*(answered_on_record(log) for log in logs))
    missing = sorted(set(answered) - on_record)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no line: {missing[:5]}"
    for log in logs:
        # The write in flight at the kill may be cut at a page boundary: one bad line at most, at the very
        # end, and it belongs to requests not yet answered (they wait for that write).
        report = load([log]).report
        assert len(report.corrupt) <= 1, report.corrupt
        if report.corrupt:
            assert report.corrupt[0].line == len(log.read_bytes().splitlines())


KILL_RUNS = 10


def test_kill_9_at_random_moments_under_load_loses_no_answered_request(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("MCPTRACE_TEST_SEED", time.time_ns()))
    lost_in_flight = 0
    for run in range(KILL_RUNS):
        with running_server(tmp_path / f"run-{run}", *UNLIMITED) as srv:
            load_ = Load(srv.url, "search_database", lambda i: {"query": "anvil", "limit": 1 + i % 5})
            load_.run_until(load_.kill_after(srv.process.pid, rng.uniform(0.05, 0.6)))
            assert srv.process.wait(10) == -signal.SIGKILL
        assert_every_answer_on_record(load_.answered, [srv.log_file])
        lost_in_flight += len(load_.cut)
    assert lost_in_flight, "the kills never caught a request in flight: the test proved nothing"


def test_kill_9_of_an_instrumented_user_server_loses_no_answered_request(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("MCPTRACE_TEST_SEED", time.time_ns()))
    for run in range(2):
        with running_user_server(tmp_path / f"run-{run}") as (url, proc, log):
            load_ = Load(url, "stock", lambda i: {"item": f"bolt-{i}"})
            load_.run_until(load_.kill_after(proc.pid, rng.uniform(0.05, 0.6)))
            assert proc.wait(10) == -signal.SIGKILL
        assert_every_answer_on_record(load_.answered, [log])


def test_a_replica_killed_behind_nginx_loses_no_answered_request(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    with (
        running_server(tmp_path / "replica-0", "--port", str(ports[0]), *UNLIMITED) as victim,
        running_server(tmp_path / "replica-1", "--port", str(ports[1]), *UNLIMITED) as survivor,
        running_balancer(tmp_path / "nginx", ports) as url,
    ):
        # Sessions would need affinity: every thread speaks the sessionless era, which any replica answers.
        load_ = Load(url, "search_database", lambda i: {"query": "rocket", "limit": 1 + i % 5}, sessionless=True)
        before = len(answered_on_record(victim.log_file))

        def deadline() -> None:
            load_.kill_after(victim.process.pid, random.uniform(0.2, 0.6), answers=20)()
            limit = len(load_.answered) + 40  # the survivor keeps answering after the kill
            end = time.monotonic() + 20
            while len(load_.answered) < limit:
                assert time.monotonic() < end, "the surviving replica answered nothing"
                time.sleep(0.01)

        load_.run_until(deadline)
        assert victim.process.wait(10) == -signal.SIGKILL
        assert_every_answer_on_record(load_.answered, [victim.log_file, survivor.log_file])
        assert len(answered_on_record(victim.log_file)) > before, "the killed replica had answered calls"


# -- stdio: every reply before exit -------------------------------------------------------------------

STDIO_RUNS = 100


def _script(n: int) -> tuple[bytes, list[int]]:
    """Run `n`'s requests, ending right after the last one: the handshake era or the 2026-07-28 one."""
    calls = [("tools/call", {"name": "ping", "arguments": {}}),
             ("tools/call", {"name": "search_database", "arguments": {"query": "anvil", "limit": 2}}),
             ("tools/list", {})]
    if n % 2:
        meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "script", "version": "1"}}
        messages = [{"jsonrpc": "2.0", "id": i + 1, "method": m, "params": {**p, "_meta": meta}}
                    for i, (m, p) in enumerate(calls)]
    else:
        messages = [initialize_message("script"), {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    *({"jsonrpc": "2.0", "id": i + 2, "method": m, "params": p} for i, (m, p) in enumerate(calls))]
    ids = [m["id"] for m in messages if "id" in m]
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages), ids


def test_stdio_answers_every_request_before_the_end_of_stdin_stops_it(tmp_path: Path) -> None:
    expected = {}
    for n in range(STDIO_RUNS):
        (tmp_path / f"run-{n}").mkdir()
        script, expected[n] = _script(n)
        (tmp_path / f"run-{n}" / "stdin").write_bytes(script)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, str(root / "tests" / "stdio_runs.py"), str(tmp_path), str(STDIO_RUNS),
                           "4"], env=env, cwd=root, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    statuses = json.loads(done.stdout)
    missing: dict[int, list[int]] = {}
    for n, ids in expected.items():
        assert statuses[str(n)] == 0, (tmp_path / f"run-{n}" / "stderr").read_text()
        replies = [json.loads(line) for line in (tmp_path / f"run-{n}" / "stdout").read_bytes().splitlines()]
        assert all("result" in r for r in replies), replies
        if sorted(r["id"] for r in replies) != ids:
            missing[n] = sorted(set(ids) - {r["id"] for r in replies})
    assert not missing, f"{len(missing)} of {STDIO_RUNS} runs lost replies: {missing}"
