"""Streamable HTTP on the wire: SSE streamed live, JSON for JSON-only clients, never 406."""

from __future__ import annotations

import time

import httpx
import pytest

from mcptrace.testing import RunningProcess

INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
SSE = "text/event-stream"
JSON = "application/json"


def post(server: RunningProcess, body: object, accept: str, **headers: str) -> httpx.Response:
    return httpx.post(server.url, json=body, headers={"accept": accept, **headers}, timeout=10)


def open_session(server: RunningProcess, accept: str = JSON) -> dict[str, str]:
    r = post(server, INIT, accept)
    assert r.status_code == 200
    session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    note = httpx.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                      headers={"accept": accept, **session}, timeout=10)
    assert note.status_code == 202
    return session


@pytest.mark.parametrize("accept", [JSON, f"{JSON}; q=1.0"])
def test_a_json_only_client_gets_one_json_response_not_406(server: RunningProcess, accept: str) -> None:
    r = post(server, INIT, accept)
    assert r.status_code == 200
    assert r.headers["content-type"] == JSON
    assert r.json()["result"]["serverInfo"]["name"] == "mcptrace"
    assert r.headers["x-request-id"].startswith("req-")


def test_an_sse_only_client_gets_an_event_stream_not_406(server: RunningProcess) -> None:
    r = post(server, INIT, SSE)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(SSE)
    assert '"serverInfo"' in r.text


def test_sse_responses_are_chunked_uncached_and_kept_alive(server: RunningProcess) -> None:
    r = post(server, INIT, f"{JSON}, {SSE}")
    assert r.headers["content-type"].startswith(SSE)
    assert "no-cache" in r.headers["cache-control"]
    assert r.headers["connection"] == "keep-alive"
    assert "content-length" not in r.headers
    assert r.headers.get("transfer-encoding") == "chunked"


def test_progress_events_reach_the_client_while_the_tool_still_runs(server: RunningProcess) -> None:
    session = open_session(server, SSE)
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "run_report", "arguments": {}, "_meta": {"progressToken": "p1"}}}
    arrivals: list[tuple[float, str]] = []
    start = time.monotonic()
    with httpx.stream("POST", server.url, json=body, headers={"accept": SSE, **session}, timeout=20) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:") and len(line) > 6:
                arrivals.append((time.monotonic() - start, line))
    progress = [t for t, line in arrivals if "notifications/progress" in line]
    final = [t for t, line in arrivals if '"result"' in line]
    assert len(progress) >= 3 and final
    # The first progress event arrives long before the call ends (the report spreads over > 1 s).
    assert final[0] - progress[0] > 0.9


def test_json_only_tool_call_returns_the_result_and_its_request_id(server: RunningProcess) -> None:
    session = open_session(server, JSON)
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "search_database", "arguments": {"query": "anvil", "limit": 2}}}
    r = post(server, body, JSON, **session)
    assert r.headers["content-type"] == JSON
    result = r.json()["result"]
    assert result["structuredContent"]["count"] == 2
    assert result["_meta"]["mcptrace/mcp_request_id"] == r.headers["x-request-id"]


def test_a_proxy_request_id_is_kept(server: RunningProcess) -> None:
    r = post(server, INIT, JSON, **{"x-request-id": "nginx-0123456789abcdef"})
    assert r.headers["x-request-id"] == "nginx-0123456789abcdef"
    assert r.json()["result"]["_meta"]["mcptrace/mcp_request_id"] == "nginx-0123456789abcdef"


def test_stateless_mode_gives_no_session_id(tmp_path, upstream) -> None:  # type: ignore[no-untyped-def]
    from mcptrace.testing import running_server

    with running_server(tmp_path, "--stateless") as srv:
        r = post(srv, INIT, JSON)
        assert r.status_code == 200
        assert "mcp-session-id" not in r.headers
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ping", "arguments": {}}}
        r = post(srv, call, JSON, **{"mcp-protocol-version": "2025-11-25"})
        assert r.json()["result"]["content"][0]["text"] == "pong"


class TestBadInput:
    """Malformed requests get JSON-RPC errors (never a 5xx, never a traceback) and the server carries on."""

    def test_malformed_json_is_a_parse_error(self, server: RunningProcess) -> None:
        r = httpx.post(server.url, content=b'{"jsonrpc": "2.0", "id": 1, "meth', timeout=10,
                       headers={"accept": JSON, "content-type": JSON})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == -32700
        assert "Traceback" not in r.text

    def test_wrong_types_are_invalid_requests(self, server: RunningProcess) -> None:
        r = post(server, {"jsonrpc": "2.0", "id": {"not": "an id"}, "method": 7}, JSON)
        assert 400 <= r.status_code < 500
        assert r.json()["error"]["code"] in (-32600, -32602)

    def test_unknown_methods_are_method_not_found(self, server: RunningProcess) -> None:
        session = open_session(server)
        r = post(server, {"jsonrpc": "2.0", "id": 9, "method": "no/such/method"}, JSON, **session)
        assert r.json()["error"]["code"] == -32601

    def test_bodies_over_the_limit_get_413_with_a_jsonrpc_error(self, server: RunningProcess) -> None:
        big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * (1024 * 1024 + 10)}}
        r = post(server, big, JSON)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == -32600

    def test_the_server_still_answers_after_bad_input(self, server: RunningProcess) -> None:
        assert post(server, INIT, JSON).status_code == 200
        assert "Traceback" not in server.stderr()
