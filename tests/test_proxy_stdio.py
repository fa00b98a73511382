"""`mcptrace proxy -- CMD`: stdio servers written elsewhere, driven through the proxy by the official clients.

npm's server-everything exercises every message kind (server-to-client requests, progress,
logging, tasks); PyPI's mcp-server-time is a Python reference server; a small SDK server that
misbehaves on request brings the faults. Each test reads the proxy's own log afterwards: the lines
`mcptrace serve` writes, with the same fields, that the analysis commands read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, types
from mcp.shared.exceptions import MCPError

from mcptrace.testing import subprocess_env
from tests.helpers import UNLIMITED, assert_contract, read_flushed_log, wait_for_log
from tests.otel_receivers import attrs, hex_id, oteltap
from tests.proxy_targets import FAULTY, TS_CLIENT, everything_command, node, proxy_params

pytestmark = pytest.mark.slow

META_ID = "mcptrace/mcp_request_id"


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


def mcptrace(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcptrace", *map(str, args)], capture_output=True, text=True,
                          timeout=60, env=subprocess_env())


def requests_are_closed(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every request has its one closing line (`tool_call` or `response_sent`), once; returns them by id."""
    closing = [r for r in records if r["event"] in ("tool_call", "response_sent")]
    by_id = {r["mcp_request_id"]: r for r in closing}
    assert closing and len(by_id) == len(closing)
    received = {r["mcp_request_id"] for r in records if r["event"] == "request_received"}
    assert received <= set(by_id), "a request written down while it ran is closed too"
    return by_id


class Callbacks:
    """The client's side of the server's own requests: sampling, elicitation, roots, and its log messages."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {"sampling": 0, "elicitation": 0, "roots": 0}
        self.logged = anyio.Event()

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.seen["sampling"] += 1
        return types.CreateMessageResult(role="assistant", model="test-model",
                                         content=types.TextContent(type="text", text="sampled by the client"))

    async def elicitation(self, context: Any, params: Any) -> types.ElicitResult:
        self.seen["elicitation"] += 1
        return types.ElicitResult(action="accept", content={"name": "Ada", "check": True})

    async def roots(self, context: Any) -> types.ListRootsResult:
        self.seen["roots"] += 1
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/project", name="project")])

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logged.set()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_every_message_kind_passes_both_ways_through_the_stdio_proxy(tmp_path: Path, mode: str) -> None:
    answers = Callbacks()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def drive() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with Client(
            proxy_params(tmp_path, everything_command()), mode=mode, sampling_callback=answers.sampling,
            elicitation_callback=answers.elicitation, list_roots_callback=answers.roots,
            logging_callback=answers.logging,
        ) as client:
            seen["tools"] = {t.name for t in (await client.list_tools()).tools}
            echo = await client.call_tool("echo", {"message": "through the proxy"})
            seen["echo"], seen["echo_id"] = text(echo), (echo.meta or {}).get(META_ID)
            await client.call_tool("trigger-long-running-operation", {"duration": 0.3, "steps": 2},
                                   progress_callback=on_progress)
            seen["sampling"] = text(await client.call_tool("trigger-sampling-request", {"prompt": "hi"}))
            seen["elicitation"] = text(await client.call_tool("trigger-elicitation-request", {}))
            seen["roots"] = text(await client.call_tool("get-roots-list", {}))
            resources = (await client.list_resources()).resources
            seen["resource"] = (await client.read_resource(resources[0].uri)).contents[0]
            seen["prompt"] = (await client.get_prompt("simple-prompt")).messages[0]
            await client.set_logging_level("debug")
            await client.call_tool("toggle-simulated-logging", {})
            with anyio.fail_after(10):
                await answers.logged.wait()  # a server notification, sent on its own
            await client.call_tool("toggle-simulated-logging", {})
        return seen

    async def main() -> dict[str, Any]:
        with anyio.fail_after(60):
            return await drive()

    seen = anyio.run(main)
    assert {"echo", "trigger-sampling-request", "trigger-elicitation-request", "get-roots-list"} <= seen["tools"]
    assert seen["echo"] == "Echo: through the proxy"
    assert "sampled by the client" in seen["sampling"]
    assert "Ada" in seen["elicitation"]
    assert "file:///tmp/project" in seen["roots"]
    assert progress, "no progress notification came through"
    assert seen["resource"] is not None and seen["prompt"] is not None
    # server-everything also asks for the roots by itself 350 ms after the handshake; when that races
    # get-roots-list, both requests go out (its own code), so the roots are asked once or twice.
    assert answers.seen["sampling"] == 1 and answers.seen["elicitation"] == 1 and answers.seen["roots"] in (1, 2)

    records = read_flushed_log(tmp_path / "logs" / "mcptrace.log")
    assert_contract(records)
    closed = requests_are_closed(records)
    assert seen["echo_id"] in closed and closed[seen["echo_id"]]["status"] == "success"
    calls = {r["tool_name"]: r for r in records if r["event"] == "tool_call"}
    assert {"echo", "trigger-sampling-request", "get-roots-list"} <= set(calls)
    echo_line = calls["echo"]
    assert echo_line["mcp_request_id"] == seen["echo_id"]
    assert echo_line["arguments_hash"] and echo_line["result_hash"] and echo_line["input_token_count"] > 0
    assert echo_line["transport"] == "stdio" and echo_line["caller_id"] == "mcp"
    assert echo_line["protocol_version"] == "2025-11-25" and echo_line["client_name"] == "mcp"
    methods = {r["method"] for r in closed.values()}
    assert {"initialize", "tools/list", "resources/read", "prompts/get", "logging/setLevel"} <= methods
    if mode == "auto":  # the client asks for the 2026-07-28 era first; this server answers it does not know it
        discover = next(r for r in closed.values() if r["method"] == "server/discover")
        assert discover["status"] == "error" and discover["error_code"] == -32601


def test_a_python_reference_server_from_pypi_behind_the_proxy(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]

    async def main() -> types.CallToolResult:
        with anyio.fail_after(30):
            async with Client(proxy_params(tmp_path, command), mode="legacy") as client:
                return await client.call_tool("get_current_time", {"timezone": "Europe/Paris"})

    result = anyio.run(main)
    assert not result.is_error and "Europe/Paris" in text(result)
    records = read_flushed_log(tmp_path / "logs" / "mcptrace.log")
    assert_contract(records)
    call = next(r for r in records if r["event"] == "tool_call")
    assert call["tool_name"] == "get_current_time" and call["status"] == "success"
    assert call["mcp_request_id"] == (result.meta or {})[META_ID]


def test_a_limited_call_through_the_stdio_proxy_is_one_refused_line_and_nothing_else(tmp_path: Path) -> None:
    params = proxy_params(tmp_path, everything_command(), "--rate-limit-tools", "echo=1/1,*=100/200")

    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(params, mode="legacy") as client:
                assert text(await client.call_tool("echo", {"message": "once"})) == "Echo: once"
                with pytest.raises(MCPError) as refused:
                    await client.call_tool("echo", {"message": "twice"})
                assert refused.value.code == -32000 and refused.value.data["retryAfterMs"] > 0

    anyio.run(main)
    records = read_flushed_log(tmp_path / "logs" / "mcptrace.log")
    assert_contract(records)
    [line] = [r for r in records if r["event"] == "request_refused"]
    assert {k: line[k] for k in ("status", "refusal_reason", "caller_id", "tool_name", "transport", "limit_scope")} == {
        "status": "refused", "refusal_reason": "rate_limited", "caller_id": "mcp", "tool_name": "echo",
        "transport": "stdio", "limit_scope": "tool",
    }
    served = [r for r in records if r["event"] == "tool_call" and r.get("tool_name") == "echo"]
    assert len(served) == 1, "the refused call has no line of an answered request"


def test_the_typescript_sdk_client_through_the_stdio_proxy(tmp_path: Path) -> None:
    """Sampling, elicitation, roots, progress, logging and a task (tasks/get, tasks/result) from the TS client."""
    proxy = [sys.executable, "-m", "mcptrace", "proxy", "--data-dir", str(tmp_path), "--", *everything_command()]
    done = subprocess.run([node(), str(TS_CLIENT), "stdio", *proxy], capture_output=True, text=True, timeout=90,
                          env=subprocess_env(), cwd=tmp_path)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in summary, summary["error"]
    assert summary["echo"] == "Echo: from typescript" and summary["requestId"].startswith("req-")
    assert summary["progress"] >= 1
    assert "sampled by the client" in summary["sampling"] and "Ada" in summary["elicitation"]
    assert "file:///tmp/project" in summary["roots"]
    assert summary["taskStatuses"][-1] == "completed" and "Research Report" in summary["taskResult"]
    assert summary["seen"]["logging"] >= 1
    records = read_flushed_log(tmp_path / "logs" / "mcptrace.log")
    assert_contract(records)
    closed = requests_are_closed(records)
    assert {"tasks/get", "tasks/result"} <= {r["method"] for r in closed.values()}
    assert {r["caller_id"] for r in closed.values()} == {"ts-sdk-client"}


def test_the_proxys_span_is_the_parent_of_the_servers_work_over_stdio(tmp_path: Path) -> None:
    """A SERVER span per request, exported; its context reaches the server in `_meta` (here `mcptrace serve
    --stdio`, which logs the parent it was given)."""
    server_dir = tmp_path / "server"
    command = [sys.executable, "-m", "mcptrace", "serve", "--stdio", "--data-dir", str(server_dir)]
    with oteltap() as tap:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}

        async def main() -> types.CallToolResult:
            with anyio.fail_after(30):
                async with Client(proxy_params(tmp_path / "proxy", command, env=env), mode="legacy") as client:
                    return await client.call_tool("get_config", {})

        result = anyio.run(main)
        request_id = (result.meta or {})[META_ID]
        span = tap.spans.wait_for(lambda s: attrs(s).get("mcptrace.mcp_request_id") == request_id)
    assert span.name == "tools/call get_config" and span.kind == 2  # SERVER
    assert attrs(span)["network.transport"] == "pipe" and attrs(span)["gen_ai.tool.name"] == "get_config"
    served = next(r for r in read_flushed_log(server_dir / "logs" / "mcptrace.log") if r["event"] == "tool_call")
    assert served["trace_id"] == hex_id(span.trace_id) and served["parent_span_id"] == hex_id(span.span_id)


def test_faults_of_the_server_are_answered_logged_and_survived(tmp_path: Path) -> None:
    """A server that dies, hangs, answers slowly, prints to stdout and sends huge answers."""
    command = [sys.executable, str(FAULTY)]
    args = ("--request-timeout", "4", "--target-max-message-bytes", "200000", *UNLIMITED)
    params = proxy_params(tmp_path, command, *args, env={"MCPTRACE_RESTART_BACKOFF": "0.05"})
    log = tmp_path / "logs" / "mcptrace.log"
    outcomes: dict[str, Any] = {}

    async def call(client: Client, tool: str, arguments: dict[str, Any]) -> Any:
        try:
            return await client.call_tool(tool, arguments)
        except MCPError as exc:
            return exc

    async def main() -> None:
        with anyio.fail_after(60):
            async with Client(params, mode="legacy") as client:
                outcomes["noise"] = await call(client, "noise", {})
                outcomes["slow"] = await call(client, "slow", {"seconds": 0.3})
                outcomes["huge"] = await call(client, "huge", {"size": 300_000})
                outcomes["after_huge"] = await call(client, "echo", {"message": "still here"})
                outcomes["hang"] = await call(client, "hang", {})
                outcomes["crash"] = await call(client, "crash", {"status": 3})
                for _ in range(100):  # the server is being started again: bounded retries
                    outcomes["after_crash"] = await call(client, "echo", {"message": "back"})
                    if not isinstance(outcomes["after_crash"], MCPError):
                        break
                    await anyio.sleep(0.05)

    anyio.run(main)
    assert text(outcomes["noise"]) == "said something on stdout"  # the stray line never reached the client
    assert text(outcomes["slow"]) == "after 0.3 s"
    assert isinstance(outcomes["huge"], MCPError) and "over the proxy's limit of 200000 bytes" in str(outcomes["huge"])
    assert text(outcomes["after_huge"]) == "still here"
    assert isinstance(outcomes["hang"], MCPError) and "no answer within 4 s" in str(outcomes["hang"])
    assert isinstance(outcomes["crash"], MCPError) and "exited with status 3" in str(outcomes["crash"])
    assert text(outcomes["after_crash"]) == "back"  # restarted, and the client's handshake replayed

    records = wait_for_log(log, lambda r: r["event"] == "server_stopped")
    records = read_flushed_log(log)
    assert_contract(records)
    rejected = [r for r in records if r["event"] == "target_output_rejected"]
    assert any(r["message"] == "Starting the server... done" for r in rejected)
    assert any("bytes, over the limit" in r["error"] for r in rejected)
    exited = [r for r in records if r["event"] == "target_exited"]
    assert len(exited) == 1 and exited[0]["exit_code"] == 3 and exited[0]["restart_in_ms"] == 50
    assert sum(r["event"] == "target_started" for r in records) == 2
    closed = requests_are_closed(records)
    by_tool = {r["tool_name"]: r for r in records if r["event"] == "tool_call"}
    assert by_tool["slow"]["duration_ms"] >= 300
    assert by_tool["hang"]["status"] == "error" and by_tool["crash"]["status"] == "error"
    assert all(r["status"] in ("success", "error") for r in closed.values())


def test_the_analysis_commands_read_the_proxys_log(tmp_path: Path) -> None:
    """A scripted agent loops on one call; `loops` finds it and `chain` shows a request, from the proxy's log."""
    command = [sys.executable, str(FAULTY)]
    ids: list[str] = []

    async def main() -> None:
        with anyio.fail_after(30):
            async with Client(proxy_params(tmp_path, command), mode="legacy") as client:
                for _ in range(6):
                    result = await client.call_tool("echo", {"message": "are we there yet"})
                    ids.append((result.meta or {})[META_ID])

    anyio.run(main)
    log = tmp_path / "logs" / "mcptrace.log"
    read_flushed_log(log)
    episodes = json.loads(mcptrace("loops", log, "--threshold", "3", "--format", "json", "--no-index").stdout)
    repeat = next(e for e in episodes if e["kind"] == "repeat")
    assert repeat["tool_name"] == "echo" and repeat["request_ids"] == ids
    chain = json.loads(mcptrace("chain", ids[2], log, "--format", "json", "--no-index").stdout)
    events = [line["event"] for line in chain]
    assert events == ["tool_call"]  # one line per request
    assert {line["mcp_request_id"] for line in chain} == {ids[2]}
