"""What `mcptrace proxy` adds to a call: the same server directly and through the proxy, stdio and HTTP.

    python bench/proxy.py [--seconds 6] [--sessions 4] [--rounds 3]

The server is npm's `@modelcontextprotocol/server-everything` (tests/node, installed by
scripts/test.sh), its `echo` tool, started by the bench. For each transport and round the
same load runs against the server directly and through the proxy (which writes its JSON log
to a file, as in production; rate limits lifted so they do not answer instead of the server):

- stdio: one client writes a `tools/call` line and waits for its answer, back to back
  (one pipe is one session);
- HTTP: `--sessions` concurrent Streamable HTTP sessions calling back to back (a light httpx
  client reading the server's SSE answers), against the server's own Streamable HTTP
  transport directly, through `mcptrace proxy --target`, and through `bench/relay.py` (a
  relay with nothing but aiohttp both ways: the latency and CPU any Python hop adds here).

Rounds alternate direct and proxied runs so background load hits both; the table reports the
median of the rounds: p50 and p99 per call, req/s, the latency the proxy adds and the req/s
ratio. The load average is printed before and after. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = ROOT / "tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
UNLIMITED = ["--rate-limit-caller", "1000000/1000000", "--rate-limit-tools", "*=1000000/1000000"]
PROTOCOL = "2025-11-25"
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}


def node() -> str:
    bundled = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "node"
    found = str(bundled) if bundled.exists() else shutil.which("node")
    if found is None or not EVERYTHING.exists():
        raise SystemExit("bench/proxy.py needs the npm test servers: run scripts/test.sh "
                         "(or npm ci --prefix tests/node)")
    return found


def call(i: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": f"call {i}"}}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    from mcptrace.testing import stop_process

    stop_process(proc, timeout=15)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of one process (Linux), not counting its children; 0 without a pid."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(latencies: list[float], seconds: float, cpu: float) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    return {"calls": len(latencies), "rps": len(latencies) / seconds, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
            "cpu_ms": cpu * 1000 / len(latencies)}


# -- stdio -----------------------------------------------------------------------------------------

async def stdio_load(command: list[str], seconds: float, warmup: float, *, proxied: bool) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env=_env(), limit=16 * 1024 * 1024,
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    async def request(message: dict[str, Any]) -> Any:
        stdin.write(orjson.dumps(message) + b"\n")
        await stdin.drain()
        while True:
            answer = orjson.loads(await stdout.readline())
            if answer.get("id") == message["id"]:
                return answer

    try:
        async with asyncio.timeout(warmup + seconds + 60):
            await request(INIT)
            stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            latencies: list[float] = []
            start = time.perf_counter()
            measure_from, stop_at = start + warmup, start + warmup + seconds
            pid = process.pid if proxied else None
            cpu_from: float | None = None
            i = 0
            while (now := time.perf_counter()) < stop_at:
                i += 1
                if cpu_from is None and now >= measure_from:
                    cpu_from = cpu_seconds(pid)
                answer = await request(call(i))
                assert "result" in answer, answer
                if now >= measure_from:
                    latencies.append(time.perf_counter() - now)
            cpu = cpu_seconds(pid) - (cpu_from or 0.0)
    finally:
        stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
    return _summary(latencies, seconds, cpu)


# -- HTTP ------------------------------------------------------------------------------------------

async def http_load(url: str, sessions: int, seconds: float, warmup: float, *, pid: int | None) -> dict[str, float]:
    import anyio
    import httpx

    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    def answer_of(response: httpx.Response) -> Any:
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                return orjson.loads(line[6:])
        raise AssertionError(f"no answer in {response.text[:200]!r}")

    async def session(http: httpx.AsyncClient) -> None:
        r = await http.post(url, content=orjson.dumps(INIT), headers=headers)
        session_headers = {**headers, "mcp-protocol-version": PROTOCOL, "mcp-session-id": r.headers["mcp-session-id"]}
        await http.post(url, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers=session_headers)
        i = 0
        while (now := time.perf_counter()) < stop_at:
            i += 1
            response = await http.post(url, content=orjson.dumps(call(i)), headers=session_headers)
            answer = answer_of(response)
            assert "result" in answer, answer
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)
        await http.delete(url, headers=session_headers)

    cpu: list[float] = []

    async def sample_cpu() -> None:
        await anyio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu.append(cpu_seconds(pid))
        await anyio.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu.append(cpu_seconds(pid))

    with anyio.fail_after(warmup + seconds + 60):
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=sessions)) as http, \
                anyio.create_task_group() as tg:
            tg.start_soon(sample_cpu)
            for _ in range(sessions):
                tg.start_soon(session, http)
    return _summary(latencies, seconds, cpu[1] - cpu[0])


def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent HTTP sessions")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import anyio

    server = [node(), str(EVERYTHING)]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mcptrace-bench-proxy-") as tmp:
        workdir = Path(tmp)
        port = _free_port()
        target = subprocess.Popen([*server, "streamableHttp"], env={**os.environ, "PORT": str(port)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ready = workdir / "ready"
        proxy: subprocess.Popen[bytes] | None = None
        relay: subprocess.Popen[bytes] | None = None
        try:
            _wait(lambda: _listening(port), target, "server-everything")
            direct_url = f"http://127.0.0.1:{port}/mcp"
            proxy = subprocess.Popen(
                [sys.executable, "-m", "mcptrace", "proxy", "--port", "0", "--data-dir", str(workdir / "http"),
                 "--target", direct_url, *UNLIMITED, "--ready-file", str(ready)],
                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            _wait(ready.exists, proxy, "mcptrace proxy")
            proxy_url = ready.read_text()
            proxy_pid = proxy.pid
            relay_ready = workdir / "relay-ready"
            relay = subprocess.Popen([sys.executable, str(ROOT / "bench" / "relay.py"), direct_url, str(relay_ready)],
                                     env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait(relay_ready.exists, relay, "bench/relay.py")
            relay_url, relay_pid = relay_ready.read_text(), relay.pid
            stdio_proxy = [sys.executable, "-m", "mcptrace", "proxy", "--data-dir", str(workdir / "stdio"), *UNLIMITED,
                           "--", *server, "stdio"]
            runs: dict[tuple[str, str], Callable[[], Awaitable[dict[str, float]]]] = {
                ("stdio", "direct"): lambda: stdio_load([*server, "stdio"], args.seconds, args.warmup, proxied=False),
                ("stdio", "proxy"): lambda: stdio_load(stdio_proxy, args.seconds, args.warmup, proxied=True),
                ("HTTP", "direct"): lambda: http_load(direct_url, args.sessions, args.seconds, args.warmup, pid=None),
                ("HTTP", "proxy"): lambda: http_load(proxy_url, args.sessions, args.seconds, args.warmup,
                                                     pid=proxy_pid),
                ("HTTP", "relay"): lambda: http_load(relay_url, args.sessions, args.seconds, args.warmup,
                                                     pid=relay_pid),
            }
            for r in range(args.rounds):
                for key, run in runs.items():
                    res = anyio.run(run)
                    results.setdefault(key, []).append(res)
                    print(f"round {r + 1} {key[0]:>5} {key[1]:>6}: {res['rps']:7.1f} req/s  "
                          f"p50 {res['p50_ms']:6.3f} ms  p99 {res['p99_ms']:6.3f} ms  "
                          f"proxy CPU {res['cpu_ms']:5.3f} ms/call  ({int(res['calls'])} calls)", flush=True)
        finally:
            for hop in (relay, proxy):
                if hop is not None:
                    _stop(hop)
            _stop(target)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    def median(key: tuple[str, str], field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    print()
    print("| transport | hop | direct p50 | hop p50 | added p50 | direct p99 | hop p99 | added p99 "
          "| direct req/s | hop req/s | ratio | hop CPU per call |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for transport, hop in (("stdio", "proxy"), ("HTTP", "proxy"), ("HTTP", "relay")):
        d, p = (transport, "direct"), (transport, hop)
        p50d, p50p, p99d, p99p = median(d, "p50_ms"), median(p, "p50_ms"), median(d, "p99_ms"), median(p, "p99_ms")
        rd, rp = median(d, "rps"), median(p, "rps")
        name = "mcptrace proxy" if hop == "proxy" else "bare relay"
        print(f"| {transport} | {name} | {p50d:.3f} ms | {p50p:.3f} ms | {p50p - p50d:+.3f} ms | {p99d:.3f} ms | "
              f"{p99p:.3f} ms | {p99p - p99d:+.3f} ms | {rd:.0f} | {rp:.0f} | {rp / rd:.2f}x | "
              f"{median(p, 'cpu_ms'):.3f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
