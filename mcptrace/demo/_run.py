"""Running the demo: an upstream and a server as child processes, the workload, the summary.

Layout of the run directory:

    logs/mcptrace.log   the server's JSON log lines (the thing to investigate)
    data/               the server's SQLite database
    processes/          the children's stderr, for when something goes wrong

The children are stopped when `run_demo` returns or raises (Ctrl-C included).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import polars as pl

from mcptrace._process import running
from mcptrace.demo._summary import per_client, per_tool, tool_calls
from mcptrace.demo._workload import Progress, run_workload

LOG_NAME = "mcptrace.log"
#: Seconds a child may take to start: generous, for busy CI machines.
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class DemoResult:
    out: Path
    log_file: Path
    progress: Progress
    calls: pl.DataFrame

    @property
    def per_tool(self) -> pl.DataFrame:
        return per_tool(self.calls)

    @property
    def per_client(self) -> pl.DataFrame:
        return per_client(self.calls)


#: A shorter breaker cool-down than production's, so the demo's short outage also shows the recovery.
DEMO_SERVER_ENV = {"MCPTRACE_BREAKER_COOLDOWN": "1"}


def run_demo(
    out: Path, *, on_tick: Callable[[Progress], None] | None = None, say: Callable[[str], None] | None = None
) -> DemoResult:
    """Run the whole demo into `out`; the previous demo's logs there are replaced."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    out = out.resolve()
    logs, data, processes = out / "logs", out / "data", out / "processes"
    for directory in (logs, data, processes):
        directory.mkdir(parents=True, exist_ok=True)
    for old in [*logs.glob(f"{LOG_NAME}*"), *processes.iterdir()]:
        if old.is_file():
            old.unlink()
    log_file = logs / LOG_NAME

    with running(["upstream", "--port", "0"], processes, timeout=START_TIMEOUT) as upstream:
        serve = [
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data),
            "--log-file",
            str(log_file),
            "--upstream-url",
            upstream.base_url,
        ]
        with running(serve, processes, env=DEMO_SERVER_ENV, timeout=START_TIMEOUT) as server:
            say(f"server   {server.url}  (upstream {upstream.base_url})")
            say(f"logs     {log_file}")
            progress = anyio.run(_workload, server.url, upstream.base_url, on_tick)
    # The server has stopped (SIGTERM flushes its log), so every line is on disk now.
    return DemoResult(out=out, log_file=log_file, progress=progress, calls=tool_calls(log_file))


async def _workload(url: str, upstream_url: str, on_tick: Callable[[Progress], None] | None) -> Progress:
    return await run_workload(url, upstream_url=upstream_url, on_tick=on_tick)
