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
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

LOG_DIR = HERE / "incidents"
PLANTED = HERE / "planted.toml"
README = HERE / "README.md"

#: Seconds from the start of the workload: (incident, start, end).
SCHEDULE = (
    ("slow_tool", 12.0, 24.0),
    ("upstream_outage", 32.0, 44.0),
    ("agent_loop", 52.0, 62.0),
)
DURATION = 72.0
SLOW_UPSTREAM_MS = 1400.0
LOOP_CALLER = "agent-triage"
LOOP_QUERY = {"query": "refund status for order 4471", "limit": 5}


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
)
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


async def _agent(url: str, agent: Agent, t0: float, seed: int) -> None:
    import anyio
    from mcp import Client
    from mcp.types import Implementation

    rng = random.Random(seed)
    names = [t for t, _ in agent.tools]
    weights = [w for _, w in agent.tools]
    run = 0
    while time.monotonic() - t0 < DURATION:
        run += 1
        # each "run" of the agent is one client connection: a session in legacy mode, none otherwise
        run_end = time.monotonic() + rng.uniform(14, 22)
        info = Implementation(name=agent.name, version="2.3.1")
        async with Client(url, mode=agent.mode, client_info=info, read_timeout_seconds=10) as client:
            while time.monotonic() < min(run_end, t0 + DURATION):
                tool = rng.choices(names, weights)[0]
                with anyio.fail_after(15):
                    await client.call_tool(tool, _arguments(tool, rng))
                await anyio.sleep(agent.pace * rng.uniform(0.5, 1.5))


async def _looping_agent(url: str, t0: float, planted: dict[str, tuple[str, str]]) -> None:
    """An agent stuck retrying one search whose answer never changes."""
    import anyio
    from mcp import Client
    from mcp.types import Implementation

    _, start, end = next(s for s in SCHEDULE if s[0] == "agent_loop")
    await anyio.sleep(max(0.0, t0 + start - time.monotonic()))
    info = Implementation(name=LOOP_CALLER, version="0.9.0")
    async with Client(url, mode="auto", client_info=info, read_timeout_seconds=10) as client:
        await client.call_tool("get_config", {"key": "limits"})
        began = _now()
        while time.monotonic() < t0 + end:
            with anyio.fail_after(15):
                await client.call_tool("search_database", LOOP_QUERY)
            await anyio.sleep(0.15)
        planted["agent_loop"] = (began, _now())


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_workload(workdir: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    import anyio

    from mcptrace.testing import running_server, running_upstream

    planted: dict[str, tuple[str, str]] = {}
    with (
        running_upstream(workdir / "upstream") as upstream,
        running_server(
            workdir / "server",
            "--upstream-url",
            upstream.base_url,
        ) as server,
    ):

        async def main() -> None:
            t0 = time.monotonic()
            with anyio.fail_after(DURATION + 60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_faults, upstream.base_url, t0, planted)
                    tg.start_soon(_looping_agent, server.url, t0, planted)
                    for i, agent in enumerate(AGENTS):
                        tg.start_soon(_agent, server.url, agent, t0, 1000 + i)

        anyio.run(main)
        log = server.log_file
    return log, planted


def write_planted(planted: dict[str, tuple[str, str]]) -> None:
    lines = ["# What generate.py planted, with the wall-clock window it was switched on (UTC).", ""]
    for name, _, _ in SCHEDULE:
        start, end = planted[name]
        lines += [f"[{name}]", f'start = "{start}"', f'end = "{end}"']
        if name == "agent_loop":
            lines += [f'caller_id = "{LOOP_CALLER}"', 'tool_name = "search_database"']
        elif name == "slow_tool":
            lines += ['tool_name = "fetch_upstream"', f"upstream_latency_ms = {SLOW_UPSTREAM_MS:g}"]
        else:
            lines += ['service = "upstream"']
        lines.append("")
    PLANTED.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--readme", action="store_true", help="only rebuild README.md from the committed logs"
    )
    args = parser.parse_args(argv)
    if not args.readme:
        with tempfile.TemporaryDirectory(prefix="mcptrace-sample-") as tmp:
            log, planted = run_workload(Path(tmp))
            if LOG_DIR.exists():
                shutil.rmtree(LOG_DIR)
            LOG_DIR.mkdir()
            shutil.copy(log, LOG_DIR / "mcptrace.log")
        write_planted(planted)
    from sample_logs._readme import render_readme

    README.write_text(render_readme(LOG_DIR, PLANTED))
    print(f"wrote {LOG_DIR.relative_to(HERE.parent)}/ and {README.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
