"""Regenerate `sample_logs/`: the real server under a mixed workload, with incidents planted on a schedule.

    python sample_logs/generate.py            # run the workload (about 80 s), rewrite logs and README
    python sample_logs/generate.py --readme   # only rebuild README.md from the committed logs

The server and the demo upstream run on 127.0.0.1 (free ports) and are stopped at
the end. Agents use the official MCP client, some in `mode="legacy"` (handshake,
session ids) and some in the default sessionless mode. The faults are switched on
the upstream's admin endpoint, never faked in the logs: the log lines are what
`mcptrace serve` wrote. `planted.toml` records what was planted and when; the
README is computed from the logs, so it says what the logs actually show.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sample_logs._spans import SpanTap, span_rows  # noqa: E402 - needs the checkout on the path first

LOG_DIR = HERE / "incidents"
SPANS = HERE / "spans" / "spans.jsonl"
PLANTED = HERE / "planted.toml"
README = HERE / "README.md"

#: Seconds from the start of the workload: (incident, start, end).
SCHEDULE = (
    ("slow_tool", 12.0, 24.0),
    ("upstream_outage", 30.0, 40.0),
    ("auth_failures", 44.0, 52.0),
    ("agent_loop", 56.0, 66.0),
    ("rate_limit_storm", 70.0, 74.0),
)
DURATION = 84.0
SLOW_UPSTREAM_MS = 1400.0
LOOP_CALLER = "agent-triage"
LOOP_QUERY = {"query": "refund status for order 4471", "limit": 5}
REVOKED_CALLER = "agent-reports"
STORM_CALLER = "agent-batch"
#: Server guards: generous for normal agents, far below what the storm sends.
GUARD_ARGS = ("--rate-limit-caller", "20/40", "--suspend-after", "30", "--suspend-seconds", "5")


@dataclass
class Agent:
    name: str
    mode: str
    pace: float
    tools: tuple[tuple[str, float], ...]


AGENTS = (
    Agent(
        "agent-billing", "legacy", 0.45, (("search_database", 4), ("fetch_upstream", 3), ("get_config", 1))
    ),
    Agent("agent-support", "auto", 0.5, (("fetch_upstream", 3), ("search_database", 3), ("run_report", 0.4))),
    Agent("agent-search", "auto", 0.35, (("search_database", 6), ("get_config", 1), ("fetch_upstream", 1))),
    Agent("ci-probe", "legacy", 1.0, (("ping", 1),)),
    Agent(REVOKED_CALLER, "legacy", 0.8, (("search_database", 2), ("get_config", 1))),
)
CALLERS = (*(a.name for a in AGENTS), LOOP_CALLER, STORM_CALLER)
WORDS = ("anvil", "rocket", "bolt", "gear", "spring", "widget", "lever", "pulley")


def _arguments(tool: str, rng: random.Random) -> dict[str, object]:
    if tool == "search_database":
        return {"query": rng.choice(WORDS), "limit": rng.choice((3, 5, 10))}
    if tool == "fetch_upstream":
        return {"key": f"doc-{rng.randrange(40)}"}
    if tool == "get_config":
        # one in six asks for a key that does not exist: a steady trickle of client errors
        return {"key": rng.choice(("limits", "features", "region", "regions", "limits", "service"))}
    return {}


@asynccontextmanager
async def _client(url: str, name: str, token: str, mode: str, version: str = "2.3.1") -> AsyncIterator[Any]:
    """An official SDK client that sends `token` as its bearer credential."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import Implementation

    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        info = Implementation(name=name, version=version)
        async with Client(transport, mode=mode, client_info=info, read_timeout_seconds=30) as client:
            yield client


async def _agent(url: str, agent: Agent, token: str, t0: float, seed: int) -> None:
    import anyio
    from mcp.shared.exceptions import MCPError

    rng = random.Random(seed)
    names = [t for t, _ in agent.tools]
    weights = [w for _, w in agent.tools]
    while time.monotonic() - t0 < DURATION:
        # each "run" of the agent is one client connection: a session in legacy mode, none otherwise
        run_end = time.monotonic() + rng.uniform(14, 22)
        async with _client(url, agent.name, token, agent.mode) as client:
            while time.monotonic() < min(run_end, t0 + DURATION):
                tool = rng.choices(names, weights)[0]
                try:
                    with anyio.fail_after(30):
                        await client.call_tool(tool, _arguments(tool, rng))
                except (MCPError, TimeoutError):
                    pass  # the log has it; a real agent would carry on too
                await anyio.sleep(agent.pace * rng.uniform(0.5, 1.5))


async def _revoked_agent(
    url: str, token: str, store: Path, t0: float, planted: dict[str, tuple[str, str]]
) -> None:
    """An agent whose token is revoked mid-run and that keeps retrying with it."""
    import anyio

    _, start, end = _window("auth_failures")
    with anyio.move_on_after(max(0.0, t0 + start - time.monotonic())):
        await _agent(url, next(a for a in AGENTS if a.name == REVOKED_CALLER), token, t0, 7)
    await anyio.to_thread.run_sync(_token_cli, "revoke", REVOKED_CALLER, "--store", str(store))
    began = _now()
    while time.monotonic() < t0 + end:
        try:
            with anyio.fail_after(10):
                async with _client(url, REVOKED_CALLER, token, "legacy") as client:
                    await client.call_tool("search_database", {"query": "invoice", "limit": 3})
        except Exception:  # 401: the retry loop is the incident
            pass
        await anyio.sleep(0.4)
    planted["auth_failures"] = (began, _now())


async def _looping_agent(url: str, token: str, t0: float, planted: dict[str, tuple[str, str]]) -> None:
    """An agent stuck retrying one search whose answer never changes."""
    import anyio

    _, start, end = _window("agent_loop")
    await anyio.sleep(max(0.0, t0 + start - time.monotonic()))
    async with _client(url, LOOP_CALLER, token, "auto", version="0.9.0") as client:
        await client.call_tool("get_config", {"key": "limits"})
        began = _now()
        while time.monotonic() < t0 + end:
            with anyio.fail_after(15):
                await client.call_tool("search_database", LOOP_QUERY)
            await anyio.sleep(0.15)
        planted["agent_loop"] = (began, _now())


async def _storm(url: str, token: str, t0: float, planted: dict[str, tuple[str, str]]) -> None:
    """A batch job that fires distinct searches as fast as it can, far over its rate limit."""
    import anyio

    _, start, end = _window("rate_limit_storm")
    await anyio.sleep(max(0.0, t0 + start - time.monotonic()))
    async with _client(url, STORM_CALLER, token, "auto", version="1.0.0") as client:
        began = _now()

        async def worker(n: int) -> None:
            sku = n * 100_000
            while time.monotonic() < t0 + end:
                sku += 1
                try:
                    with anyio.fail_after(10):
                        await client.call_tool("search_database", {"query": f"sku-{sku}", "limit": 3})
                except Exception:  # refused: a batch job does not look at why
                    await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(worker, n)
        planted["rate_limit_storm"] = (began, _now())


async def _faults(upstream: str, t0: float, planted: dict[str, tuple[str, str]]) -> None:
    import anyio
    import httpx

    switches = {
        "slow_tool": ({"latency_ms": SLOW_UPSTREAM_MS}, {"latency_ms": 0}),
        "upstream_outage": ({"down": True}, {"down": False}),
    }
    async with httpx.AsyncClient(base_url=upstream, timeout=5) as http:
        for name, start, end in SCHEDULE:
            if name not in switches:
                continue
            on, off = switches[name]
            await anyio.sleep(max(0.0, t0 + start - time.monotonic()))
            (await http.post("/admin/faults", json=on)).raise_for_status()
            began = _now()
            await anyio.sleep(max(0.0, t0 + end - time.monotonic()))
            (await http.post("/admin/faults", json=off)).raise_for_status()
            planted[name] = (began, _now())


def _window(name: str) -> tuple[str, float, float]:
    return next(s for s in SCHEDULE if s[0] == name)


def _token_cli(*args: str) -> str:
    from mcptrace.testing import subprocess_env

    done = subprocess.run(
        [sys.executable, "-m", "mcptrace", "token", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_workload(workdir: Path, tap: SpanTap) -> tuple[Path, dict[str, tuple[str, str]]]:
    import httpx2  # noqa: F401 - imported before the clock starts, so no agent starts late
    import mcp.client.streamable_http  # noqa: F401

    from mcptrace.testing import running_server, running_upstream

    store = workdir / "tokens.json"
    tokens = {name: _token_cli("add", name, "--tenant", "acme", "--store", str(store)) for name in CALLERS}
    planted: dict[str, tuple[str, str]] = {}
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": tap.endpoint,
        "OTEL_SERVICE_NAME": "mcptrace-sample",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BSP_MAX_QUEUE_SIZE": "20000",
    }
    with running_upstream(workdir / "upstream") as upstream:
        guarded = ("--upstream-url", upstream.base_url, "--tokens", str(store), *GUARD_ARGS)
        with running_server(workdir / "server", *guarded, env=otel) as server:
            _drive(server.url, upstream.base_url, store, tokens, planted)
            log = server.log_file
    return log, planted


def _drive(
    url: str, upstream: str, store: Path, tokens: dict[str, str], planted: dict[str, tuple[str, str]]
) -> None:
    """Run every agent and fault switch on the schedule, against the running server."""
    import anyio

    async def main() -> None:
        t0 = time.monotonic()
        with anyio.fail_after(DURATION + 60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_faults, upstream, t0, planted)
                tg.start_soon(_looping_agent, url, tokens[LOOP_CALLER], t0, planted)
                tg.start_soon(_storm, url, tokens[STORM_CALLER], t0, planted)
                tg.start_soon(_revoked_agent, url, tokens[REVOKED_CALLER], store, t0, planted)
                for i, agent in enumerate(AGENTS):
                    if agent.name != REVOKED_CALLER:
                        tg.start_soon(_agent, url, agent, tokens[agent.name], t0, 1000 + i)

    anyio.run(main)


def write_planted(planted: dict[str, tuple[str, str]]) -> None:
    lines = ["# What generate.py planted, with the wall-clock window it was switched on (UTC).", ""]
    for name, _, _ in SCHEDULE:
        start, end = planted[name]
        lines += [f"[{name}]", f'start = "{start}"', f'end = "{end}"']
        lines += {
            "agent_loop": [f'caller_id = "{LOOP_CALLER}"', 'tool_name = "search_database"'],
            "slow_tool": ['tool_name = "fetch_upstream"', f"upstream_latency_ms = {SLOW_UPSTREAM_MS:g}"],
            "upstream_outage": ['service = "upstream"'],
            "auth_failures": [
                f'caller_id = "{REVOKED_CALLER}"',
                'cause = "token revoked, client kept retrying"',
            ],
            "rate_limit_storm": [
                f'caller_id = "{STORM_CALLER}"',
                f'server_limits = "{" ".join(GUARD_ARGS)}"',
            ],
        }[name]
        lines.append("")
    PLANTED.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--readme", action="store_true", help="only rebuild README.md from the committed logs"
    )
    args = parser.parse_args(argv)
    if not args.readme:
        with tempfile.TemporaryDirectory(prefix="mcptrace-sample-") as tmp, SpanTap() as tap:
            log, planted = run_workload(Path(tmp), tap)
            if LOG_DIR.exists():
                shutil.rmtree(LOG_DIR)
            LOG_DIR.mkdir()
            shutil.copy(log, LOG_DIR / "mcptrace.log")
            # the server flushed its spans when it stopped; give the receiver a moment to hand them over
            time.sleep(1.0)
            SPANS.parent.mkdir(exist_ok=True)
            SPANS.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in span_rows(tap.spans)))
        write_planted(planted)
    from sample_logs._readme import render_readme

    README.write_text(render_readme(LOG_DIR, PLANTED))
    print(f"wrote {LOG_DIR.relative_to(HERE.parent)}/ and {README.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
