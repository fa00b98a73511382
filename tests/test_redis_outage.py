"""Redis that stops answering (SIGSTOP: connections open, nothing comes back) costs no request its deadline.

Every Redis call has a 50 ms deadline and goes through the `redis` breaker: the
first calls wait out their deadline, the breaker opens (one log line, a metric),
and from then on requests skip Redis until a trial call finds it back. Limits
keep holding per replica meanwhile, and revocations as last synchronised.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mcptrace import _fields as f
from mcptrace.guards._tokens import TokenStore
from mcptrace.testing import running_server
from tests.helpers import eventually, read_log, wait_for_log
from tests.redis_server import Redis

PING = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ping", "arguments": {}, "_meta": {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}


def breaker_state(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f.M_BREAKER_STATE and sample.labels.get("service") == "redis":
                return sample.value
    return -1.0


def test_a_stopped_redis_delays_no_request_past_its_deadline_and_each_transition_is_said_once(
    tmp_path: Path,
) -> None:
    redis = Redis(tmp_path / "redis")
    redis.start()
    store = TokenStore(tmp_path / "tokens.json")
    token = store.add("caller", tenant="acme")
    headers = {"authorization": f"Bearer {token}", "accept": "application/json", "mcp-protocol-version": "2026-07-28",
               "mcp-method": "tools/call", "mcp-name": "ping"}
    try:
        with running_server(tmp_path / "server", "--tokens", str(store.path), "--redis-url", redis.url,
                            env={"MCPTRACE_BREAKER_COOLDOWN": "1", "MCPTRACE_HEALTH_CACHE_SECONDS": "0"}) as srv, \
                httpx.Client(timeout=30) as http:
            assert [http.post(srv.url, json=PING, headers=headers).status_code for _ in range(5)] == [200] * 5
            assert redis.proc is not None
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                timings, statuses = [], []
                for _ in range(30):
                    start = time.perf_counter()
                    statuses.append(http.post(srv.url, json=PING, headers=headers).status_code)
                    timings.append(time.perf_counter() - start)
                assert set(statuses) == {200}, "limits hold per replica meanwhile; nothing fails"
                # Before: two 1 s socket timeouts per request (~2,008 ms each). The deadline is 50 ms; the
                # rest is a loaded machine's scheduling, far below a second.
                assert max(timings) < 0.75, f"slowest request {max(timings) * 1000:.0f} ms"
                assert sorted(timings)[len(timings) // 2] < 0.2
                assert breaker_state(srv.base_url) == 2  # open
                opened = wait_for_log(srv.log_file, lambda r: r["event"] == "breaker_state_changed"
                                      and r["service"] == "redis" and r["breaker_state"] == "open")
                assert len(opened) == 1 and opened[0]["level"] == "warning"
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)

            def closed_again() -> None:
                http.post(srv.url, json=PING, headers=headers)  # a trial call after the cooldown
                assert breaker_state(srv.base_url) == 0

            eventually(closed_again, timeout=20)
            wait_for_log(srv.log_file, lambda r: r["event"] == "breaker_state_changed" and r["service"] == "redis"
                         and r["breaker_state"] == "closed")
            records = read_log(srv.log_file)
        transitions = [r["breaker_state"] for r in records
                       if r["event"] == "breaker_state_changed" and r["service"] == "redis"]
        assert transitions[0] == "open" and transitions[-1] == "closed"
        assert all(a != b for a, b in zip(transitions, transitions[1:], strict=False)), "one line per transition"
        assert "Traceback" not in srv.stderr()
    finally:
        redis.stop()
