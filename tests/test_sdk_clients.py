"""The official MCP SDK client against the real server, in every mode and transport."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation

from mcptrace.testing import RunningProcess, subprocess_env
from tests.helpers import assert_contract, read_flushed_log, read_log

MODES = ["legacy", "auto", "2026-07-28"]


async def exercise(client: Client) -> None:
    tools = {t.name for t in (await client.list_tools()).tools}
    assert {"search_database", "get_config", "run_report", "fetch_upstream", "ping"} <= tools
    result = await client.call_tool("search_database", {"query": "anvil", "limit": 3})
    assert not result.is_error
    assert result.structured_content is not None and result.structured_content["count"] == 3
    assert result.meta is not None and result.meta["mcptrace/mcp_request_id"].startswith("req-")
    assert (await client.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]
    fetched = await client.call_tool("fetch_upstream", {"key": "k1"})
    assert not fetched.is_error, fetched.content


@pytest.mark.parametrize("mode", MODES)
def test_sse_client(server: RunningProcess, mode: str) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(server.url, mode=mode, client_info=Implementation(name=f"sse-{mode}", version="1")) as c:
                await exercise(c)
                progress: list[float] = []

                async def on_progress(p: float, total: float | None, message: str | None) -> None:
                    progress.append(p)

                report = await c.call_tool("run_report", {}, progress_callback=on_progress)
                assert not report.is_error
                assert len(progress) >= 3

    anyio.run(main)


def _json_only_client() -> httpx2.AsyncClient:
    async def only_json(request: httpx2.Request) -> None:
        if request.method == "POST":
            request.headers["accept"] = "application/json"

    return httpx2.AsyncClient(event_hooks={"request": [only_json]}, timeout=30)


@pytest.mark.parametrize("mode", MODES)
def test_json_only_client(server: RunningProcess, mode: str) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with _json_only_client() as http:
                transport = streamable_http_client(server.url, http_client=http)
                async with Client(transport, mode=mode, client_info=Implementation(name="json", version="1")) as c:
                    await exercise(c)

    anyio.run(main)


def test_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcptrace", "serve", "--stdio", "--data-dir", str(tmp_path)],
        env=subprocess_env(),
    )

    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(params, mode="legacy") as c:
                tools = {t.name for t in (await c.list_tools()).tools}
                assert "search_database" in tools
                result = await c.call_tool("search_database", {"query": "rocket", "limit": 2})
                assert result.structured_content is not None and result.structured_content["count"] == 2

    anyio.run(main)
    records = read_log(tmp_path / "logs" / "mcptrace.log")
    assert_contract(records)
    calls = [r for r in records if r["event"] == "tool_call"]
    assert calls and all(r["transport"] == "stdio" for r in calls)


def test_every_line_the_server_wrote_follows_the_log_contract(server: RunningProcess) -> None:
    anyio.run(_one_call, server.url)
    records = read_flushed_log(server.log_file)
    assert records
    assert_contract(records)
    closing = [r["mcp_request_id"] for r in records if r["event"] in ("tool_call", "response_sent")]
    assert closing and len(closing) == len(set(closing)), "one line closes each request"
    for rid in closing:
        events = [r["event"] for r in records if r.get("mcp_request_id") == rid]
        assert events[-1] in ("tool_call", "response_sent")
    tool_calls = [r for r in records if r["event"] == "tool_call"]
    assert tool_calls
    for call in tool_calls:
        for key in ("tool_name", "caller_id", "arguments_hash", "result_hash", "duration_ms", "status",
                    "input_token_count", "downstream_calls", "method", "jsonrpc_id"):
            assert key in call, key
        assert call["timestamp"].endswith("Z")


async def _one_call(url: str) -> None:
    async with Client(url, mode="legacy") as c:
        await c.call_tool("search_database", {"query": "anvil"})
