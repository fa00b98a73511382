"""Both protocol eras on one `/mcp`: the 2026-07-28 sessionless wire next to the handshake era.

The official client in every mode over SSE-only clients (JSON-only and
both-accepting clients are in test_sdk_clients.py), and raw HTTP for the
2026-07-28 rules: `server/discover`, and the `Mcp-Method` / `Mcp-Name` /
`MCP-Protocol-Version` headers that must mirror the body (else `-32020`
HeaderMismatch with HTTP 400).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation

from mcptrace.testing import RunningProcess, running_server
from tests.helpers import assert_contract, read_log

MODERN = "2026-07-28"
HEADER_MISMATCH = -32020
JSON = "application/json"
SSE = "text/event-stream"


def envelope(method: str, params: dict[str, Any] | None = None, *, version: str = MODERN) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-modern", "version": "1"},
    }
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**(params or {}), "_meta": meta}}


def modern_post(
    server: RunningProcess, body: dict[str, Any], *, accept: str = JSON, **headers: str
) -> httpx.Response:
    sent = {"accept": accept, "mcp-protocol-version": MODERN, "mcp-method": body["method"]}
    name = body["params"].get("name")
    if name is not None:
        sent["mcp-name"] = name
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return httpx.post(server.url, json=body, headers=sent, timeout=10)


def sse_messages(response: httpx.Response) -> list[dict[str, Any]]:
    import json

    return [
        json.loads(line[5:])
        for line in response.text.splitlines()
        if line.startswith("data:") and line[5:].strip()
    ]


class TestDiscover:
    @pytest.mark.parametrize("accept", [JSON, SSE, f"{JSON}, {SSE}"])
    def test_server_discover_is_answered_in_the_form_asked_for(
        self, server: RunningProcess, accept: str
    ) -> None:
        r = modern_post(server, envelope("server/discover"), accept=accept)
        assert r.status_code == 200
        if accept == SSE:
            assert r.headers["content-type"].startswith(SSE)
            [message] = sse_messages(r)
        else:
            message = r.json()
        result = message["result"]
        assert MODERN in result["supportedVersions"]
        assert result["capabilities"]["tools"] is not None
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcptrace"

    def test_a_sessionless_call_gets_no_session_id(self, server: RunningProcess) -> None:
        r = modern_post(server, envelope("tools/call", {"name": "ping", "arguments": {}}))
        assert r.status_code == 200
        assert "mcp-session-id" not in r.headers
        assert r.json()["result"]["content"][0]["text"] == "pong"


class TestHeaderRules:
    """A request whose headers disagree with its body is refused before any handler runs."""

    @pytest.mark.parametrize("accept", [JSON, SSE])
    def test_mcp_method_mismatch_is_header_mismatch_400(self, server: RunningProcess, accept: str) -> None:
        r = modern_post(server, envelope("tools/list"), accept=accept, mcp_method="prompts/list")
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == HEADER_MISMATCH and "mcp-method" in error["message"].lower()

    def test_missing_mcp_method_is_header_mismatch(self, server: RunningProcess) -> None:
        body = envelope("tools/list")
        r = httpx.post(
            server.url, json=body, headers={"accept": JSON, "mcp-protocol-version": MODERN}, timeout=10
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH

    def test_mcp_name_mismatch_is_header_mismatch_and_the_tool_never_runs(
        self, server: RunningProcess
    ) -> None:
        body = envelope("tools/call", {"name": "run_report", "arguments": {}})
        r = modern_post(server, body, mcp_name="ping")
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == HEADER_MISMATCH and "mcp-name" in error["message"].lower()

    def test_protocol_version_header_must_match_the_envelope(self, server: RunningProcess) -> None:
        r = modern_post(server, envelope("tools/list", version="2025-11-25"))
        assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH

    def test_a_duplicated_routing_header_is_refused(self, server: RunningProcess) -> None:
        body = envelope("tools/list")
        headers = [
            ("accept", JSON),
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
            ("mcp-method", "tools/list"),
        ]
        r = httpx.post(server.url, json=body, headers=headers, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH

    def test_a_refused_request_is_logged_with_its_status_and_era(self, server: RunningProcess) -> None:
        r = modern_post(server, envelope("tools/list"), mcp_method="resources/list")
        request_id = r.headers["x-request-id"]
        deadline = time.monotonic() + 5
        while not (lines := [x for x in read_log(server.log_file) if x.get("mcp_request_id") == request_id]):
            assert time.monotonic() < deadline, "the rejection was never logged"
            time.sleep(0.05)
        [line] = lines
        assert line["event"] == "request_rejected" and line["http_status"] == 400
        assert line["protocol_version"] == MODERN and line["session_id"] is None
        assert_contract(lines)

    def test_no_traceback_reaches_the_client_and_the_server_carries_on(self, server: RunningProcess) -> None:
        r = modern_post(server, envelope("tools/list"), mcp_method="x" * 300)
        assert "Traceback" not in r.text
        assert modern_post(server, envelope("tools/list")).status_code == 200


def logged_tool_calls(server: RunningProcess, client_name: str, count: int) -> list[dict[str, Any]]:
    """The client's tool_call lines, once the server's log flusher has written `count` of them (bounded)."""
    deadline = time.monotonic() + 5
    while True:
        calls = [
            r
            for r in read_log(server.log_file)
            if r["event"] == "tool_call" and r["client_name"] == client_name
        ]
        if len(calls) >= count or time.monotonic() > deadline:
            return calls
        time.sleep(0.05)


#: The era each client mode speaks against mcptrace: "auto" discovers the 2026-07-28 wire.
ERA_OF_MODE = {"legacy": "2025-11-25", "auto": MODERN, MODERN: MODERN}


def _sse_only_client() -> httpx2.AsyncClient:
    async def only_sse(request: httpx2.Request) -> None:
        if request.method == "POST":
            request.headers["accept"] = SSE

    return httpx2.AsyncClient(event_hooks={"request": [only_sse]}, timeout=30)


@pytest.mark.parametrize("mode", ["legacy", "auto", MODERN])
def test_an_sse_only_client_works_in_every_mode(server: RunningProcess, mode: str) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with _sse_only_client() as http:
                transport = streamable_http_client(server.url, http_client=http)
                info = Implementation(name=f"sse-only-{mode}", version="1")
                async with Client(transport, mode=mode, client_info=info) as c:  # type: ignore[arg-type]
                    assert (await c.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]
                    found = await c.call_tool("search_database", {"query": "anvil", "limit": 2})
                    assert found.structured_content is not None and found.structured_content["count"] == 2
                    progress: list[float] = []

                    async def on_progress(p: float, total: float | None, message: str | None) -> None:
                        progress.append(p)

                    report = await c.call_tool("run_report", {}, progress_callback=on_progress)
                    assert not report.is_error and len(progress) >= 3

    anyio.run(main)
    calls = logged_tool_calls(server, f"sse-only-{mode}", 3)
    assert len(calls) == 3
    assert {c["protocol_version"] for c in calls} == {ERA_OF_MODE[mode]}
    sessions = {c["session_id"] for c in calls}
    assert sessions == {None} if mode != "legacy" else (len(sessions) == 1 and None not in sessions)


def test_an_sse_only_raw_request_never_gets_json_on_success(server: RunningProcess) -> None:
    r = modern_post(server, envelope("tools/call", {"name": "ping", "arguments": {}}), accept=SSE)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(SSE)
    assert "content-length" not in r.headers
    [message] = sse_messages(r)
    assert message["result"]["content"][0]["text"] == "pong"
    assert message["result"]["_meta"]["mcptrace/mcp_request_id"] == r.headers["x-request-id"]


def test_a_stateless_server_serves_both_eras(tmp_path: Path) -> None:
    async def main(url: str) -> None:
        with anyio.fail_after(30):
            for mode in ("legacy", MODERN):
                async with Client(url, mode=mode) as c:  # type: ignore[arg-type]
                    assert (await c.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]

    with running_server(tmp_path, "--stateless") as srv:
        anyio.run(main, srv.url)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_stdio_serves_both_eras_and_logs_which(tmp_path: Path, mode: str) -> None:
    import sys

    from mcp import StdioServerParameters

    from mcptrace.testing import subprocess_env

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcptrace", "serve", "--stdio", "--data-dir", str(tmp_path)],
        env=subprocess_env(),
    )

    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(
                params, mode=mode, client_info=Implementation(name="stdio-agent", version="2")
            ) as c:  # type: ignore[arg-type]
                assert (await c.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]

    anyio.run(main)
    [call] = [r for r in read_log(tmp_path / "logs" / "mcptrace.log") if r["event"] == "tool_call"]
    assert call["protocol_version"] == ERA_OF_MODE[mode] and call["transport"] == "stdio"
    assert call["client_name"] == "stdio-agent" and call["client_version"] == "2"
    assert call["session_id"] is None  # stdio has no Mcp-Session-Id in either era
