"""Load figures for `mcptrace serve` against the bare SDK server, measured in one run.

    python bench/load.py              # about 4 minutes
    python bench/load.py --quick      # about 1.5 minutes, smaller samples
    python bench/load.py --json out.json

Everything runs on 127.0.0.1, every phase is bounded in time and count, and
every server it starts is stopped at the end. Figures printed:

- sustainable calls/s (closed loop, 16 connections) for `ping` and
  `search_database`, then p50/p99 latency under an open-loop load at 50% and
  90% of it (latency counted from each call's scheduled start, so a stalled
  server cannot hide its queue), for both servers, and their ratios;
- memory per open session and RSS after N abandoned sessions (default 5,000);
  idle expiry and the session cap, with the errors a client sees;
- noisy neighbour: one caller floods `ping` from 6 connections (aiohttp, keep-alive) while another
  calls every 50 ms; the second caller's p50 and p99 flooded vs alone (goal
  <= 1.5x each). mcptrace runs with bearer tokens and a per-caller limit of 25
  calls/s (the victim's 20/s stays under it), so the flooder is refused at
  admission and then suspended; the bare SDK has nothing to refuse it with.
  The same phase gives what a refusal costs: the server's CPU (its children
  included) per call while the flood runs, against its CPU per served `ping`
  while the victim calls alone (goal: a refused call <= 10% of a served one).

The load generator shares the machine with the server under test, so absolute
numbers are low on a small machine; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcptrace._process import running, subprocess_env  # noqa: E402
from mcptrace.guards._tokens import TokenStore  # noqa: E402
from mcptrace.testing import initialize_message  # noqa: E402

ACCEPT = "application/json, text/event-stream"
UNLIMITED = ("--rate-limit-caller", "1000000/1000000", "--rate-limit-tools", "*=1000000/1000000")
#: The per-caller limit while measuring the noisy neighbour: above the victim's 20 calls/s, below a flood.
NOISY_LIMITS = ("--rate-limit-caller", "25/50")
ARGUMENTS = {"ping": {}, "search_database": {"query": "anvil", "limit": 5}}


@dataclass
class Target:
    name: str
    url: str
    pid: int


# -- servers ---------------------------------------------------------------------------------------


@contextmanager
def mcptrace_server(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Target]:
    with running(
        ["serve", "--port", "0", "--data-dir", str(workdir), *args], workdir, env=env, timeout=60
    ) as p:
        yield Target("mcptrace", p.url, p.process.pid)


@contextmanager
def bare_server(workdir: Path) -> Iterator[Target]:
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "bare_server.py"),
            "--data-dir",
            str(workdir),
            "--ready-file",
            str(ready),
        ],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare SDK server did not start")
            time.sleep(0.05)
        yield Target("bare SDK", ready.read_text().strip(), proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of the processes under it (Linux), in seconds."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    if pid not in stats:
        return float("nan")
    ticks = sum(int(v) for v in stats[pid][11:15])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, st in stats.items():
            if int(st[1]) == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
                ticks += int(st[11]) + int(st[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# -- one MCP session over one connection -------------------------------------------------------------


class Session:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        name: str = "bench",
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.shared = http is not None
        self.http = http or client(token, connections=1)
        self.session: dict[str, str] = {}
        self.next_id = 2

    async def open(self) -> Session:
        init = initialize_message(self.name)
        r = await self.http.post(self.url, json=init)
        r.raise_for_status()
        self.session = {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.session
        )
        return self

    async def call(self, tool: str) -> bool:
        """One tools/call; True when it succeeded."""
        self.next_id += 1
        body = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": ARGUMENTS[tool]},
        }
        try:
            r = await self.http.post(self.url, json=body, headers=self.session)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and b'"result"' in r.content and b'"isError":true' not in r.content

    async def aclose(self) -> None:
        if not self.shared:
            await self.http.aclose()


def client(token: str | None = None, *, connections: int) -> httpx.AsyncClient:
    headers = {"accept": ACCEPT, "content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(headers=headers, timeout=60, limits=httpx.Limits(max_connections=connections))


async def sessions(url: str, n: int, *, http: httpx.AsyncClient | None = None, **kw: Any) -> list[Session]:
    """`n` sessions opened at once: one connection each, or all over the shared client `http`."""
    opened: list[Session] = []
    async with anyio.create_task_group() as tg:
        for i in range(n):

            async def open_one(i: int = i) -> None:
                opened.append(
                    await Session(
                        url, name=f"{kw.get('name', 'bench')}-{i}", token=kw.get("token"), http=http
                    ).open()
                )

            tg.start_soon(open_one)
    return opened


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    s = pl.Series(latencies) * 1000
    return {
        "p50_ms": round(float(s.quantile(0.5, "linear")), 2),
        "p99_ms": round(float(s.quantile(0.99, "linear")), 2),
    }


# -- measurements ----------------------------------------------------------------------------------


async def capacity(target: Target, tool: str, seconds: float, connections: int = 16) -> tuple[float, float]:
    """(calls/s, server CPU ms per call) with `connections` sessions calling back to back."""
    pool = await sessions(target.url, connections)
    done = 0
    cpu_before = cpu_seconds(target.pid)
    deadline = time.monotonic() + seconds

    async def worker(s: Session) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            if await s.call(tool):
                done += 1

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for s in pool:
            tg.start_soon(worker, s)
    elapsed = time.monotonic() - start
    cpu_ms = (cpu_seconds(target.pid) - cpu_before) * 1000 / max(1, done)
    for s in pool:
        await s.aclose()
    return done / elapsed, cpu_ms


async def paced(
    target: Target, tool: str, rate: float, seconds: float, connections: int = 32
) -> dict[str, Any]:
    """Open loop: calls start on a fixed schedule whether or not earlier ones finished."""
    pool = await sessions(target.url, connections)
    send, receive = anyio.create_memory_object_stream[Session](connections)
    for s in pool:
        send.send_nowait(s)
    latencies: list[float] = []
    failures = 0
    total = int(rate * seconds)

    async def one(scheduled: float) -> None:
        nonlocal failures
        s = await receive.receive()
        try:
            ok = await s.call(tool)
        finally:
            send.send_nowait(s)
        if ok:
            latencies.append(time.monotonic() - scheduled)
        else:
            failures += 1

    start = time.monotonic() + 0.2
    async with anyio.create_task_group() as tg:
        for k in range(total):
            scheduled = start + k / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)  # pacing the schedule, not waiting for the server
            tg.start_soon(one, scheduled)
    for s in pool:
        await s.aclose()
    return {"rate": round(rate, 1), "calls": total, "failures": failures, **percentiles(latencies)}


async def throughput(target: Target, seconds: float) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for tool in ("ping", "search_database"):
        cap, cpu_ms = await capacity(target, tool, seconds)
        figures[tool] = {
            "calls_per_s": round(cap, 1),
            "cpu_ms_per_call": round(cpu_ms, 3),
            "at_50": await paced(target, tool, cap * 0.5, seconds),
            "at_90": await paced(target, tool, cap * 0.9, seconds),
        }
        print(
            f"  {target.name:9} {tool:16} {cap:7.1f} calls/s ({cpu_ms:.2f} ms CPU each)   "
            f"p50/p99 at 50%: {figures[tool]['at_50']['p50_ms']}/{figures[tool]['at_50']['p99_ms']} ms   "
            f"at 90%: {figures[tool]['at_90']['p50_ms']}/{figures[tool]['at_90']['p99_ms']} ms",
            flush=True,
        )
    return figures


async def session_memory(target: Target, n: int) -> dict[str, Any]:
    before = rss_mb(target.pid)
    async with client(connections=16) as http:
        for start in range(0, n, 100):
            await sessions(
                target.url, min(100, n - start), http=http
            )  # opened, then abandoned: never deleted
    after = rss_mb(target.pid)
    figures = {
        "sessions": n,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "kb_per_session": round((after - before) * 1024 / n, 1),
    }
    print(
        f"  {target.name:9} {n} abandoned sessions: RSS {before:.0f} -> {after:.0f} MB "
        f"({figures['kb_per_session']} KB each)",
        flush=True,
    )
    return figures


async def noisy_neighbour(
    target: Target,
    seconds: float,
    *,
    flood_token: str | None = None,
    victim_token: str | None = None,
    flood_connections: int = 6,
) -> dict[str, Any]:
    async def victim() -> list[float]:
        s = await Session(target.url, token=victim_token, name="victim").open()
        latencies: list[float] = []
        start = time.monotonic()
        for k in range(int(seconds / 0.05)):
            delay = start + k * 0.05 - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            t = time.monotonic()
            if await s.call("ping"):
                latencies.append(time.monotonic() - t)
        await s.aclose()
        return latencies

    cpu_before = cpu_seconds(target.pid)
    alone = await victim()
    served_cpu_ms = (cpu_seconds(target.pid) - cpu_before) * 1000 / max(1, len(alone))
    # The flood runs in its own process, so that it competes with the victim for the server, not for
    # this process's event loop.
    args = [
        sys.executable,
        __file__,
        "flood",
        target.url,
        "--connections",
        str(flood_connections),
        "--seconds",
        str(seconds * 3 + 10),
    ]
    if flood_token:
        args += ["--token", flood_token]
    flooder = await anyio.open_process(args)
    try:
        assert flooder.stdout is not None
        ready = await flooder.stdout.receive()  # the flood is running: its sessions are open
        assert ready.startswith(b"flooding"), ready
        await anyio.sleep(0.5)  # let the flood reach its steady state first
        cpu_before = cpu_seconds(target.pid)
        flood_started = time.monotonic()
        flooded = await victim()
        flood_cpu = cpu_seconds(target.pid) - cpu_before
        flood_seconds = time.monotonic() - flood_started
    finally:
        flooder.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            out = b"".join([chunk async for chunk in flooder.stdout]) if flooder.stdout else b""
            await flooder.wait()
    counts = json.loads(out.decode().strip().splitlines()[-1])
    a, f = percentiles(alone), percentiles(flooded)
    ratio = round(f["p99_ms"] / a["p99_ms"], 2) if a["p99_ms"] else float("nan")
    p50_ratio = round(f["p50_ms"] / a["p50_ms"], 2) if a["p50_ms"] else float("nan")
    # The flooder's calls during the victim's measured phase, from its whole-run rate.
    flood_total = counts["ok"] + counts["refused"]
    flood_in_phase = flood_total * flood_seconds / max(counts["seconds"], 1e-9)
    flood_cpu_ms = flood_cpu * 1000 / max(1.0, flood_in_phase + len(flooded))
    figures = {
        "alone": a,
        "flooded": f,
        "p50_ratio": p50_ratio,
        "p99_ratio": ratio,
        "flood_calls_ok": counts["ok"],
        "flood_calls_refused": counts["refused"],
        "flood_calls_per_s": round(flood_total / max(counts["seconds"], 1e-9), 1),
        "victim_calls": len(flooded),
        "served_cpu_ms_per_call": round(served_cpu_ms, 3),
        "flooded_cpu_ms_per_call": round(flood_cpu_ms, 3),
        "refused_to_served_cpu": round(flood_cpu_ms / served_cpu_ms, 3) if served_cpu_ms else float("nan"),
    }
    print(
        f"  {target.name:9} victim p50 alone {a['p50_ms']} ms, flooded {f['p50_ms']} ms -> {p50_ratio}x; "
        f"p99 alone {a['p99_ms']} ms, flooded {f['p99_ms']} ms -> {ratio}x "
        f"(flood: {counts['ok']} served, {counts['refused']} refused, {figures['flood_calls_per_s']} calls/s); "
        f"server CPU per call: {served_cpu_ms:.3f} ms served alone, {flood_cpu_ms:.3f} ms under the flood "
        f"({figures['refused_to_served_cpu']}x)",
        flush=True,
    )
    return figures


async def idle_and_cap(target: Target) -> dict[str, Any]:
    held = await sessions(target.url, 20)
    extra = Session(target.url)
    init = initialize_message("one-too-many")
    r = await extra.http.post(target.url, json=init)
    cap = {"status": r.status_code, "error": r.json().get("error")}
    await anyio.sleep(2.5)  # the point of this phase: let the sessions sit idle past their timeout
    r = await held[0].http.post(
        target.url,
        headers=held[0].session,
        json={"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "ping", "arguments": {}}},
    )
    idle = {"status": r.status_code, "error": r.json().get("error")}
    reopened = await Session(target.url).open()
    for s in [*held, extra, reopened]:
        await s.aclose()
    print(f"  session cap (20): 21st session gets HTTP {cap['status']} {cap['error']}", flush=True)
    print(
        f"  idle expiry (1 s): an idle session's next call gets HTTP {idle['status']} {idle['error']}; "
        "a new session opens fine",
        flush=True,
    )
    return {"cap": cap, "idle": idle}


async def flood_main(url: str, *, token: str | None, connections: int, seconds: float) -> dict[str, float]:
    """The noisy caller: `connections` sessions calling `ping` back to back until SIGINT or `seconds`.

    The sessions are opened as every client here opens them; the flood itself goes through aiohttp's
    keep-alive pool (its parser is in C), so that one process can send calls faster than the server refuses
    them, as a real flood does, instead of being held back by its own client's CPU.
    """
    import aiohttp

    flooders = await sessions(url, connections, token=token, name="flood")
    counts = {"ok": 0, "refused": 0}
    base = {"accept": ACCEPT, "content-type": "application/json", "mcp-method": "tools/call", "mcp-name": "ping"}
    if token:
        base["authorization"] = f"Bearer {token}"
    print("flooding", flush=True)
    started = time.monotonic()
    deadline = started + seconds

    async def flood(http: aiohttp.ClientSession, s: Session) -> None:
        headers = {**base, **s.session}
        while time.monotonic() < deadline:
            s.next_id += 1
            body = {"jsonrpc": "2.0", "id": s.next_id, "method": "tools/call",
                    "params": {"name": "ping", "arguments": {}}}
            try:
                async with http.post(url, data=json.dumps(body), headers=headers) as r:
                    content = await r.read()
                    ok = r.status == 200 and b'"result"' in content and b'"isError":true' not in content
            except aiohttp.ClientError:
                ok = False
            counts["ok" if ok else "refused"] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                for s in flooders:
                    tg.start_soon(flood, http, s)

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(stop_on_signal)
                await anyio.sleep(seconds)
                tg.cancel_scope.cancel()
    return {**counts, "seconds": time.monotonic() - started}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def main() -> int:
    if sys.argv[1:2] == ["flood"]:
        flood = argparse.ArgumentParser(prog="load.py flood")
        flood.add_argument("url")
        flood.add_argument("--token")
        flood.add_argument("--connections", type=int, default=6)
        flood.add_argument("--seconds", type=float, default=30)
        a = flood.parse_args(sys.argv[2:])
        counts = anyio.run(
            lambda: flood_main(a.url, token=a.token, connections=a.connections, seconds=a.seconds)
        )
        print(json.dumps(counts), flush=True)
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter phases and 1,000 sessions")
    parser.add_argument("--seconds", type=float, help="seconds per measured phase (default 5, quick 2)")
    parser.add_argument("--sessions", type=int, help="abandoned sessions to open (default 5000, quick 1000)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    n_sessions = args.sessions or (1000 if args.quick else 5000)
    results: dict[str, Any] = {
        "seconds_per_phase": seconds,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
    }

    with tempfile.TemporaryDirectory(prefix="mcptrace-bench-") as tmp:
        work = Path(tmp)
        store = work / "tokens.json"
        flood_token = TokenStore(store).add("flooder", tenant="acme")
        victim_token = TokenStore(store).add("victim", tenant="acme")

        print("throughput and latency", flush=True)
        with mcptrace_server(work / "m1", *UNLIMITED) as target:
            results["mcptrace"] = {"throughput": anyio.run(throughput, target, seconds)}
            results["mcptrace"]["sessions"] = anyio.run(session_memory, target, n_sessions)
        with bare_server(work / "b1") as target:
            results["bare"] = {"throughput": anyio.run(throughput, target, seconds)}
            results["bare"]["sessions"] = anyio.run(session_memory, target, n_sessions)

        print("noisy neighbour", flush=True)
        with mcptrace_server(work / "m2", "--tokens", str(store), *NOISY_LIMITS) as target:
            results["mcptrace"]["noisy"] = anyio.run(
                lambda: noisy_neighbour(
                    target, seconds * 2, flood_token=flood_token, victim_token=victim_token
                )
            )
        with bare_server(work / "b2") as target:
            results["bare"]["noisy"] = anyio.run(noisy_neighbour, target, seconds * 2)

        print("session limits", flush=True)
        env = {"MCPTRACE_SESSION_IDLE_SECONDS": "1", "MCPTRACE_MAX_SESSIONS": "20"}
        with mcptrace_server(work / "m3", *UNLIMITED, env=env) as target:
            results["mcptrace"]["session_limits"] = anyio.run(idle_and_cap, target)

    m, b = results["mcptrace"], results["bare"]
    results["ratios"] = {
        tool: {
            "calls_per_s": ratio(m["throughput"][tool]["calls_per_s"], b["throughput"][tool]["calls_per_s"]),
            "p99_at_90": ratio(
                m["throughput"][tool]["at_90"]["p99_ms"], b["throughput"][tool]["at_90"]["p99_ms"]
            ),
        }
        for tool in ("ping", "search_database")
    }
    print(
        f"\nmcptrace / bare SDK, same run (load average {results['load_average_at_start']:.1f} "
        f"on {results['cpus']} CPUs at the start):"
    )
    for tool, r in results["ratios"].items():
        print(f"  {tool:16} throughput {r['calls_per_s']}x   p99 at 90% load {r['p99_at_90']}x")
    noisy = m["noisy"]
    print(
        f"  noisy neighbour: victim p50 flooded/alone {noisy['p50_ratio']}x, p99 {noisy['p99_ratio']}x with "
        f"mcptrace (goal <= 1.5x each), {b['noisy']['p50_ratio']}x and {b['noisy']['p99_ratio']}x with the bare SDK"
    )
    served = m["throughput"]["ping"]["cpu_ms_per_call"]
    results["refused_to_served_cpu"] = round(noisy["flooded_cpu_ms_per_call"] / served, 3) if served else float("nan")
    print(
        f"  a refused call: {noisy['flooded_cpu_ms_per_call']} ms of server CPU per call under the flood, against "
        f"{served} ms for a served ping at capacity: {results['refused_to_served_cpu']}x (goal <= 0.1x; "
        f"{noisy['served_cpu_ms_per_call']} ms per ping served to the victim alone, with auth, at 20 calls/s)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
