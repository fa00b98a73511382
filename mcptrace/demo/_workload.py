"""The demo's scripted traffic: simulated agents with planted incidents, through the official SDK client.

Every agent is a real `mcp.Client` with its own `client_info` name (its
caller_id, as there is no auth in the demo). The agents mix both protocol eras
(`mode="legacy"` handshake sessions and sessionless 2026-07-28 calls) and both
response forms (SSE, and JSON-only clients that accept only
`application/json`). The planted incidents, each one a thing the forensics
layer should find:

- `looping-agent` calls one tool with the same arguments hundreds of times;
- `integrator` lives through an upstream outage window it opens and closes
  itself (`POST {upstream}/admin/faults`), so some of everyone's
  `fetch_upstream` calls fail;
- `flaky-client` makes calls that fail (bad arguments, unknown keys and tools);
- `analyst` runs the slow tool (`run_report`, with progress events);
- `status-poller` polls one key with the same arguments while the answer
  changes: a poll, not a loop.

Pacing pauses are part of the script (agents think between calls); nothing
waits on time to synchronise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import Implementation

LOOP_CALLS = 200
POLL_CALLS = 30
OUTAGE_SECONDS = 2.0


@dataclass
class AgentStats:
    calls: int = 0
    errors: int = 0
    done: bool = False
    crashed: str | None = None


@dataclass
class Progress:
    """Counters the progress printer reads while the agents run."""

    started: float = field(default_factory=time.monotonic)
    agents: dict[str, AgentStats] = field(default_factory=dict)
    #: Wall-clock edges (epoch seconds) of the upstream outage, once it has happened.
    outage: tuple[float, float] | None = None
    #: Whether the workload hit its time limit (a very busy machine) and was stopped early.
    cut_short: bool = False

    def agent(self, name: str) -> AgentStats:
        return self.agents.setdefault(name, AgentStats())

    @property
    def calls(self) -> int:
        return sum(a.calls for a in self.agents.values())

    @property
    def errors(self) -> int:
        return sum(a.errors for a in self.agents.values())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        done = sum(a.done for a in self.agents.values())
        return (
            f"  {self.elapsed:5.1f}s  {self.calls:4d} calls  {self.errors:3d} errors  "
            f"{done}/{len(self.agents)} agents done"
        )


@dataclass(frozen=True)
class Agent:
    name: str
    mode: str  # "legacy", "auto" or "2026-07-28"
    json_only: bool
    script: Callable[[Caller], Awaitable[None]]


@dataclass
class Scenario:
    """What the agents share: where the upstream is, and the outage window's edges as events."""

    upstream_url: str
    outage_started: anyio.Event = field(default_factory=anyio.Event)
    outage_over: anyio.Event = field(default_factory=anyio.Event)
    outage_edges: list[float] = field(default_factory=list)


class Caller:
    """One agent's client: counts every call, and turns failures into counts instead of crashes."""

    def __init__(self, client: Client, stats: AgentStats, scenario: Scenario) -> None:
        self.client = client
        self.stats = stats
        self.scenario = scenario

    async def call(self, tool: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        self.stats.calls += 1
        try:
            result = await self.client.call_tool(tool, arguments or {}, **kwargs)
        except MCPError:
            self.stats.errors += 1
            return None
        if result.is_error:
            self.stats.errors += 1
        return result


def _json_only_http() -> httpx2.AsyncClient:
    async def only_json(request: httpx2.Request) -> None:
        if request.method == "POST":
            request.headers["accept"] = "application/json"

    return httpx2.AsyncClient(event_hooks={"request": [only_json]}, timeout=30)


def _trace_meta(run: str) -> dict[str, str]:
    """The W3C trace context an instrumented agent framework would send: one trace per conversation."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return {"traceparent": f"00-{trace_id}-{span_id}-01", "baggage": f"run_id={run},agent.framework=demo"}


async def analyst(c: Caller) -> None:
    for query in ("anvil", "rocket", "magnet", "anvil"):
        await c.call("search_database", {"query": query, "limit": 5})
        await anyio.sleep(0.2)
    await c.scenario.outage_started.wait()
    await c.call(
        "run_report", {"category": "tools"}, progress_callback=_ignore_progress
    )  # fails: upstream down
    await c.scenario.outage_over.wait()
    await c.call("get_config", {"key": "limits"})
    # The upstream breaker stays open for its cool-down after the outage: retry like a patient agent.
    for _ in range(10):
        result = await c.call("run_report", {}, progress_callback=_ignore_progress)  # slow
        if result is not None and not result.is_error:
            break
        await anyio.sleep(1.0)


async def _ignore_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


async def support_bot(c: Caller) -> None:
    for conversation in ("conv-1", "conv-2"):
        meta = _trace_meta(conversation)
        await c.call("get_config", {}, meta=meta)
        for query in ("rocket", "skates"):
            await c.call("search_database", {"query": query, "limit": 3}, meta=meta)
            await anyio.sleep(0.15)
        await c.call("fetch_upstream", {"key": f"ticket-{conversation}"}, meta=meta)
        await anyio.sleep(1.0)


async def looping_agent(c: Caller) -> None:
    for _ in range(LOOP_CALLS):
        await c.call("search_database", {"query": "refund policy", "limit": 5})


async def status_poller(c: Caller) -> None:
    for _ in range(POLL_CALLS):
        await c.call("fetch_upstream", {"key": "deploy-status"})
        await anyio.sleep(0.15)


async def integrator(c: Caller) -> None:
    async def switch(down: bool) -> None:
        async with httpx2.AsyncClient(timeout=5) as http:
            response = await http.post(f"{c.scenario.upstream_url}/admin/faults", json={"down": down})
            response.raise_for_status()
        c.scenario.outage_edges.append(time.time())
        (c.scenario.outage_started if down else c.scenario.outage_over).set()

    for phase_down in (False, True, False):
        if phase_down:
            await switch(True)
        try:
            deadline = time.monotonic() + OUTAGE_SECONDS
            n = 0
            while time.monotonic() < deadline or n < 3:
                await c.call("fetch_upstream", {"key": f"order-{n}"})
                n += 1
                await anyio.sleep(0.2)
        finally:
            if phase_down:
                await switch(False)


async def flaky_client(c: Caller) -> None:
    bad_calls: list[tuple[str, dict[str, Any]]] = [
        ("get_config", {"key": "database_password"}),
        ("search_database", {"query": "anvil", "limit": 500}),
        ("search_database", {"query": "x" * 300}),
        ("search_database", {"query": "anvil", "limit": "ten"}),
        ("fetch_upstream", {"key": "../etc/passwd"}),
        ("delete_everything", {}),
    ]
    for _ in range(2):
        for tool, arguments in bad_calls:
            await c.call(tool, arguments)
            await anyio.sleep(0.1)
        await c.call("ping")


AGENTS: tuple[Agent, ...] = (
    Agent("analyst", "legacy", False, analyst),
    Agent("support-bot", "auto", True, support_bot),
    Agent("looping-agent", "auto", False, looping_agent),
    Agent("status-poller", "legacy", True, status_poller),
    Agent("integrator", "auto", False, integrator),
    Agent("flaky-client", "2026-07-28", True, flaky_client),
)


async def run_agent(agent: Agent, url: str, scenario: Scenario, progress: Progress) -> None:
    stats = progress.agent(agent.name)
    info = Implementation(name=agent.name, version="1.0")
    try:
        if agent.json_only:
            async with _json_only_http() as http:
                transport = streamable_http_client(url, http_client=http)
                async with Client(transport, mode=agent.mode, client_info=info) as client:
                    await agent.script(Caller(client, stats, scenario))
        else:
            async with Client(url, mode=agent.mode, client_info=info) as client:
                await agent.script(Caller(client, stats, scenario))
    except Exception as exc:  # one broken agent must not take the others down
        stats.crashed = f"{type(exc).__name__}: {exc}"[:300]
        scenario.outage_started.set()
        scenario.outage_over.set()
    finally:
        stats.done = True


async def run_workload(
    url: str,
    *,
    upstream_url: str,
    progress: Progress | None = None,
    agents: tuple[Agent, ...] = AGENTS,
    on_tick: Callable[[Progress], None] | None = None,
    timeout: float = 90.0,
) -> Progress:
    """Run every agent concurrently against `url`; `on_tick` sees the counters once a second.

    `timeout` is a safety net, not a pace: agents still running then are stopped
    and `Progress.cut_short` says so; what they did is in the log all the same.
    """
    progress = progress or Progress()
    scenario = Scenario(upstream_url)
    for agent in agents:
        progress.agent(agent.name)
    with anyio.move_on_after(timeout) as limit:
        async with anyio.create_task_group() as tg:
            if on_tick is not None:
                tg.start_soon(_ticker, progress, on_tick)
            async with anyio.create_task_group() as agents_tg:
                for agent in agents:
                    agents_tg.start_soon(run_agent, agent, url, scenario, progress)
            tg.cancel_scope.cancel()
    progress.cut_short = limit.cancelled_caught
    if len(scenario.outage_edges) == 2:
        progress.outage = (scenario.outage_edges[0], scenario.outage_edges[1])
    return progress


async def _ticker(progress: Progress, on_tick: Callable[[Progress], None]) -> None:
    while True:
        await anyio.sleep(1.0)
        on_tick(progress)
