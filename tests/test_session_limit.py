"""At its session cap the server refuses one more handshake-era session clearly, and only that.

A real `mcptrace serve` with `MCPTRACE_MAX_SESSIONS=2` and the official SDK
client: the third `mode="legacy"` client gets HTTP 503 with `Retry-After` and a
message naming the limit, the refusal is logged and counted, a closed session
makes room again, and sessionless 2026-07-28 calls never meet the cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import Implementation
from prometheus_client.parser import text_string_to_metric_families

from mcptrace.testing import RunningProcess, initialize_message, running_server
from tests.helpers import assert_contract, read_log, wait_for_log

CAP = 2
SERVER_ERROR = -32000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    env = {"MCPTRACE_MAX_SESSIONS": str(CAP)}
    with running_server(tmp_path_factory.mktemp("capped"), env=env) as proc:
        yield proc


def refusal_in(exc: BaseException) -> MCPError | None:
    """The MCPError a failed `Client.__aenter__` carries, however deep in exception groups."""
    if isinstance(exc, MCPError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = refusal_in(inner)
        if found is not None:
            return found
    return None


class RecordingHttp:
    """An httpx2 client for the SDK transport that keeps every response's status and headers."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, httpx2.Headers]] = []

        async def record(response: httpx2.Response) -> None:
            self.responses.append((response.status_code, response.headers))

        self.client = httpx2.AsyncClient(event_hooks={"response": [record]}, timeout=30)


@asynccontextmanager
async def legacy_session(server: RunningProcess, name: str) -> AsyncIterator[Client]:
    async with Client(server.url, mode="legacy", client_info=Implementation(name=name, version="1")) as client:
        assert (await client.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]
        yield client


def metric(server: RunningProcess, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


def test_one_session_past_the_cap_is_refused_with_retry_after_until_a_session_closes(
    server: RunningProcess,
) -> None:
    refused_before = metric(server, "mcptrace_session_limit_rejections_total")

    async def main() -> tuple[MCPError, list[tuple[int, httpx2.Headers]]]:
        with anyio.fail_after(30):
            recorder = RecordingHttp()
            async with legacy_session(server, "first"), legacy_session(server, "second") as second:
                async with recorder.client:
                    transport = streamable_http_client(server.url, http_client=recorder.client)
                    with pytest.raises(BaseException) as caught:
                        async with Client(transport, mode="legacy"):  # type: ignore[arg-type]
                            pass
                assert (await second.call_tool("ping", {})).content[0].text == "pong", "open sessions unaffected"
            # Both sessions are closed (DELETE); a new one opens at once.
            async with legacy_session(server, "after"):
                pass
            refusal = refusal_in(caught.value)
            assert refusal is not None, caught.value
            return refusal, recorder.responses

    refusal, responses = anyio.run(main)
    assert refusal.error.code == SERVER_ERROR
    assert "session limit" in refusal.error.message and str(CAP) in refusal.error.message
    assert "retry" in refusal.error.message
    status, headers = next(r for r in responses if r[0] >= 400)
    assert status == 503
    assert int(headers["retry-after"]) >= 1

    request_id = headers["x-request-id"]
    refused = wait_for_log(
        server.log_file, lambda r: r.get("mcp_request_id") == request_id and r["event"] != "request_received"
    )
    assert len(refused) == 1, "logged once"
    line = refused[0]
    assert (line["event"], line["status"], line["refusal_reason"]) == ("request_refused", "refused", "session_cap")
    assert line["http_status"] == 503 and line["limit_scope"] == "server"
    assert "session limit" in line["error"] and str(CAP) in line["error"]
    assert line["retry_after_ms"] == int(headers["retry-after"]) * 1000
    assert_contract(read_log(server.log_file))
    assert metric(server, "mcptrace_session_limit_rejections_total") == refused_before + 1


def test_the_raw_refusal_is_json_rpc_with_the_limit_in_its_data(server: RunningProcess) -> None:
    async def main() -> httpx.Response:
        with anyio.fail_after(30):
            async with (
                legacy_session(server, "a"), legacy_session(server, "b"), httpx.AsyncClient(timeout=10) as http,
            ):
                return await http.post(
                    server.url, json=initialize_message("raw"),
                    headers={"accept": "application/json, text/event-stream"},
                )

    r = anyio.run(main)
    assert r.status_code == 503 and r.headers["content-type"] == "application/json"
    assert int(r.headers["retry-after"]) >= 1
    error = r.json()["error"]
    assert error["code"] == SERVER_ERROR
    assert error["data"] == {"maxSessions": CAP, "retryAfterMs": int(r.headers["retry-after"]) * 1000}


def test_sessionless_calls_are_served_while_the_cap_is_reached(server: RunningProcess) -> None:
    refused_before = metric(server, "mcptrace_session_limit_rejections_total")

    async def main() -> None:
        with anyio.fail_after(30):
            async with legacy_session(server, "a"), legacy_session(server, "b"):
                for _ in range(CAP + 1):
                    async with Client(server.url) as modern:
                        assert (await modern.call_tool("ping", {})).content[0].text == "pong"  # type: ignore[union-attr]
                        found = await modern.call_tool("search_database", {"query": "anvil", "limit": 1})
                        assert not found.is_error
                active = await anyio.to_thread.run_sync(metric, server, "mcp_active_sessions")
                assert active == CAP, "no session was opened for them"

    anyio.run(main)
    assert metric(server, "mcptrace_session_limit_rejections_total") == refused_before
