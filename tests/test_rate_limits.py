"""Rate limits on the real server: a looping agent cannot starve others; refusals say when to retry."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from mcptrace.guards._tokens import TokenStore
from mcptrace.testing import RunningProcess, running_server
from tests.guard_clients import INIT, RawSession, client
from tests.helpers import assert_contract, read_log, wait_for_log

CALLERS = ("looper", "steady", "retrier", "suspendee", "reporter")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    store = TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")
    return store.path, {name: store.add(name, tenant="acme") for name in CALLERS}


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, tokens: tuple[Path, dict[str, str]]
) -> Iterator[RunningProcess]:
    with running_server(
        tmp_path_factory.mktemp("limited"),
        "--tokens",
        str(tokens[0]),
        "--rate-limit-caller",
        "20/40",
        "--rate-limit-tools",
        "get_config=0.25/1,run_report=0.1/5,*=100/200",
        "--suspend-after",
        "3",
        "--suspend-seconds",
        "1.5",
    ) as proc:
        yield proc


def test_a_burst_from_one_caller_leaves_another_caller_untouched(
    limited: RunningProcess,
    tokens: tuple[Path, dict[str, str]],
) -> None:
    token = tokens[1]

    async def main() -> tuple[Counter[int], list[float], list[float], float]:
        statuses: Counter[int] = Counter()
        quiet: list[float] = []
        busy: list[float] = []
        async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=16)) as http:
            looper = await RawSession(http, limited.url, token["looper"]).open()
            steady = await RawSession(http, limited.url, token["steady"]).open()

            async def measure(into: list[float], n: int) -> None:
                for _ in range(n):
                    start = time.perf_counter()
                    r = await steady.call("search_database", {"query": "anvil", "limit": 3})
                    into.append(time.perf_counter() - start)
                    assert r.status_code == 200 and "result" in r.json(), r.text

            await measure(quiet, 10)

            async def loop(n: int) -> None:
                for _ in range(n):
                    statuses[(await looper.call("ping")).status_code] += 1

            started = time.monotonic()
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(loop, 125)
                    await measure(busy, 30)
        return statuses, quiet, busy, time.monotonic() - started

    statuses, quiet, busy, elapsed = anyio.run(main)
    assert sum(statuses.values()) == 1000 and set(statuses) <= {200, 429}
    # Admitted: at most the bucket (40) plus its refill (20/s) over the run; the rest refused.
    assert 0 < statuses[200] <= 40 + 20 * elapsed
    assert statuses[429] >= 1000 - 40 - 20 * elapsed
    # Coarse: the steady caller never waits for the looper's refusals (timing goals live in bench/).
    assert statistics.median(busy) < max(1.0, 20 * statistics.median(quiet))


def test_a_limited_call_says_when_to_retry_and_the_retry_then_succeeds(
    limited: RunningProcess,
    tokens: tuple[Path, dict[str, str]],
) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with client(limited.url, tokens[1]["retrier"]) as c:
                assert not (await c.call_tool("get_config", {})).is_error
                with pytest.raises(MCPError) as limited_call:
                    await c.call_tool("get_config", {})
                error = limited_call.value
                assert (error.code, error.message) == (-32000, "Rate limit exceeded")
                retry_ms = error.data["retryAfterMs"]
                assert 0 < retry_ms <= 4000  # get_config refills one token every four seconds
                await anyio.sleep(retry_ms / 1000)  # what a well-behaved client does
                assert not (await c.call_tool("get_config", {})).is_error

    anyio.run(main)
    refusals = wait_for_log(
        limited.log_file, lambda r: r["event"] == "request_refused" and r.get("caller_id") == "retrier"
    )
    assert len(refusals) == 1 and refusals[0]["mcp_request_id"].startswith("req-")
    assert {k: refusals[0].get(k) for k in ("status", "refusal_reason", "tool_name", "limit_scope", "tenant")} == {
        "status": "refused", "refusal_reason": "rate_limited", "tool_name": "get_config", "limit_scope": "tool",
        "tenant": "acme",
    }
    assert 0 < refusals[0]["retry_after_ms"] <= 4000 and refusals[0]["http_status"] == 429


def test_a_caller_that_keeps_violating_is_suspended_and_the_suspension_lifts_by_itself(
    limited: RunningProcess,
    tokens: tuple[Path, dict[str, str]],
) -> None:
    async def main() -> None:
        with anyio.fail_after(30):
            async with httpx.AsyncClient(timeout=10) as http:
                s = await RawSession(http, limited.url, tokens[1]["suspendee"]).open()
                assert (await s.call("get_config")).status_code == 200
                scopes = [(await s.call("get_config")).json()["error"]["data"]["scope"] for _ in range(3)]
                assert scopes == ["tool", "tool", "suspended"]
                refused = await s.call("ping")  # any tool: the caller itself is suspended
                assert refused.status_code == 429
                assert refused.json()["error"]["data"]["scope"] == "suspended"
                wait_ms = refused.json()["error"]["data"]["retryAfterMs"]
                assert 0 < wait_ms <= 1500
                assert refused.headers["retry-after"] in ("1", "2")
                fresh = await http.post(limited.url, json=INIT, headers={"accept": "application/json",
                                        "authorization": f"Bearer {tokens[1]['suspendee']}"})
                assert fresh.status_code == 429  # refused before the SDK: no session is made for it
                assert "mcp-session-id" not in fresh.headers
                await anyio.sleep(wait_ms / 1000)
                assert (await s.call("ping")).status_code == 200

    anyio.run(main)


def test_forty_rapid_run_report_calls_trip_its_low_limit(
    limited: RunningProcess,
    tokens: tuple[Path, dict[str, str]],
) -> None:
    async def main() -> list[int]:
        codes: list[int] = []
        with anyio.fail_after(60):
            async with httpx.AsyncClient(timeout=30) as http:
                s = await RawSession(http, limited.url, tokens[1]["reporter"]).open()

                async def one() -> None:
                    r = await s.call("run_report")
                    codes.append(r.json()["error"]["code"] if "error" in r.json() else 0)

                async with anyio.create_task_group() as tg:
                    for _ in range(40):
                        tg.start_soon(one)
        return codes

    codes = anyio.run(main)
    assert codes.count(0) <= 5  # the bucket holds five
    assert codes.count(-32000) >= 35


def test_rate_limit_lines_follow_the_log_contract(limited: RunningProcess) -> None:
    records = read_log(limited.log_file)
    reasons = {r["refusal_reason"] for r in records if r["event"] == "request_refused"}
    assert {"rate_limited", "suspended"} <= reasons
    assert not any(r["event"] in ("rate_limited", "auth_failed") for r in records), "version-3 events only"
    assert_contract(records)


def test_callers_without_auth_are_limited_by_their_declared_name(tmp_path: Path) -> None:
    with running_server(tmp_path, "--rate-limit-tools", "get_config=1/1,*=100/200") as srv:

        async def main() -> None:
            with anyio.fail_after(30):
                async with (
                    client(srv.url, None, name="agent-a") as a,
                    client(srv.url, None, name="agent-b") as b,
                ):
                    assert not (await a.call_tool("get_config", {})).is_error
                    with pytest.raises(MCPError) as refused:
                        await a.call_tool("get_config", {})
                    assert refused.value.code == -32000 and refused.value.data["retryAfterMs"] > 0
                    assert not (await b.call_tool("get_config", {})).is_error

        anyio.run(main)


def test_over_stdio_a_limited_call_is_one_refused_line_and_nothing_else(tmp_path: Path) -> None:
    import sys

    from mcp import StdioServerParameters

    from mcptrace.testing import subprocess_env

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcptrace", "serve", "--stdio", "--data-dir", str(tmp_path), "--rate-limit-tools",
              "get_config=1/1,*=100/200"],
        env=subprocess_env(),
    )

    async def main() -> None:
        with anyio.fail_after(30):
            async with client_over(params, "stdio-agent") as c:
                assert not (await c.call_tool("get_config", {})).is_error
                with pytest.raises(MCPError) as refused:
                    await c.call_tool("get_config", {})
                assert refused.value.code == -32000 and refused.value.data["retryAfterMs"] > 0

    anyio.run(main)
    records = read_log(tmp_path / "logs" / "mcptrace.log")  # complete: the server flushed it as it stopped
    [line] = [r for r in records if r["event"] == "request_refused"]
    assert {k: line[k] for k in ("status", "refusal_reason", "caller_id", "tool_name", "transport", "limit_scope")} == {
        "status": "refused", "refusal_reason": "rate_limited", "caller_id": "stdio-agent", "tool_name": "get_config",
        "transport": "stdio", "limit_scope": "tool",
    }
    served = [r for r in records if r["event"] == "tool_call" and r.get("tool_name") == "get_config"]
    assert len(served) == 1, "the refused call has no line of an answered request"
    assert_contract(records)


def client_over(params: object, name: str) -> Any:
    from mcp import Client
    from mcp.types import Implementation

    return Client(params, mode="legacy", client_info=Implementation(name=name, version="1"))  # type: ignore[arg-type]
