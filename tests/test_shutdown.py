"""SIGTERM: the server drains, and its last log line says so."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from mcptrace.testing import running_server
from tests.helpers import read_log

INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def test_sigterm_flushes_every_line_and_ends_with_server_stopped(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        r = httpx.post(server.url, json=INIT, headers={"accept": "application/json"}, timeout=30)
        assert r.status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    records = read_log(server.log_file)
    assert records[-1]["event"] == "server_stopped"
    request_id = r.headers["x-request-id"]
    assert [x["event"] for x in records if x["mcp_request_id"] == request_id] == ["response_sent"]
