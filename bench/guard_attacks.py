"""What an attacker can make the server pay, measured: `python bench/guard_attacks.py` (about a minute).

    python bench/guard_attacks.py                  # every scenario
    python bench/guard_attacks.py uploads revoke   # some of them
    python bench/guard_attacks.py --json out.json

Scenarios, each against the real server on 127.0.0.1, bounded in time and count:

- `uploads`: 300 connections without a token, each declaring a 1 MiB body and
  sending it slowly (32 KiB every 100 ms); the server's RSS before, at its peak
  and after they closed. Then the same with a valid token (the body budget's
  turn: 64 MiB in flight at most, a quarter of it per principal).
- `revoke`: a caller calling `ping` in a tight loop while `mcptrace token revoke`
  runs, N times; how many requests that *started after the command returned*
  were still admitted, and how late.
- `redis`: Redis stopped with SIGSTOP under a token caller; the latency of each
  request while it is stopped, and the log lines the server wrote about it.

Figures are absolute (RSS in MB, counts, milliseconds) and quoted with the
load average at the start; the scenarios compare the server with itself under
attack, so no baseline server is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcptrace._process import RunningProcess, running, subprocess_env  # noqa: E402

UPLOADS = 300
BODY = 1024 * 1024
CHUNK = 32 * 1024
#: One sessionless (2026-07-28) `tools/call ping`: any request of a caller, answered by any replica.
PING = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ping", "arguments": {}, "_meta": {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}}


def ping_headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "accept": "application/json", "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/call", "mcp-name": "ping"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The peak RSS of a process, sampled every 50 ms on a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def server(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[RunningProcess]:
    with running(["serve", "--port", "0", "--data-dir", str(workdir), *args], workdir, env=env,
                 timeout=60) as proc:
        yield proc


def add_token(store: Path, caller: str) -> str:
    out = subprocess.run([sys.executable, "-m", "mcptrace", "token", "add", caller, "--tenant", "acme",
                          "--store", str(store)], capture_output=True, text=True, env=subprocess_env(),
                         check=True, timeout=60)
    return out.stdout.strip().splitlines()[-1]


async def slow_upload(port: int, host: str, token: str | None, seconds: float) -> str:
    """One connection sending a 1 MiB body slowly; how it ended: the status line, or `closed`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Accept: application/json\r\n{auth}Content-Length: {BODY}\r\n\r\n".encode())
    sent, deadline, outcome = 0, time.monotonic() + seconds, "sent"
    try:
        while sent < BODY and time.monotonic() < deadline:
            try:
                head = await asyncio.wait_for(reader.read(64), timeout=0.1)
            except TimeoutError:
                head = None
            if head is not None:  # answered (or closed) before the body was in
                outcome = head.split(b"\r\n")[0].decode(errors="replace") if head else "closed"
                break
            writer.write(b" " * CHUNK)
            await writer.drain()
            sent += CHUNK
    except (ConnectionError, OSError):
        outcome = "reset"
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
    return outcome


def uploads(tmp: Path, token_mode: bool) -> dict[str, Any]:
    store = tmp / f"tokens-{token_mode}.json"
    token = add_token(store, "uploader")
    with server(tmp / f"uploads-{token_mode}", "--tokens", str(store)) as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        host = srv.base_url.removeprefix("http://")
        for _ in range(3):  # warm the process up (imports, first requests) before measuring
            httpx.get(f"{srv.base_url}/health", timeout=10)
        before = rss_mb(srv.process.pid)

        async def attack() -> list[str]:
            return await asyncio.gather(*(slow_upload(port, host, token if token_mode else None, 12.0)
                                          for _ in range(UPLOADS)))

        start = time.monotonic()
        with Sampler(srv.process.pid) as sampler:
            outcomes = asyncio.run(attack())
        took = time.monotonic() - start
        time.sleep(2)
        after = rss_mb(srv.process.pid)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return {"uploads": UPLOADS, "with_token": token_mode, "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(sampler.peak, 1), "rss_after_mb": round(after, 1),
            "peak_rise_mb": round(sampler.peak - before, 1), "seconds": round(took, 1), "outcomes": counts}


def revoke(tmp: Path, rounds: int) -> dict[str, Any]:
    store = tmp / "tokens-revoke.json"
    add_token(store, "warmup")
    late: list[float] = []
    admitted_after = 0
    with server(tmp / "revoke", "--tokens", str(store), "--rate-limit-caller", "1e6/1e6",
                "--rate-limit-tools", "*=1e6/1e6") as srv:
        for i in range(rounds):
            token = add_token(store, f"looper-{i}")
            log: list[tuple[float, int]] = []
            stop = threading.Event()

            def loop(token: str = token, log: list[tuple[float, int]] = log, stop: threading.Event = stop) -> None:
                with httpx.Client(timeout=10) as http:
                    while not stop.is_set():
                        started = time.monotonic()
                        status = http.post(srv.url, json=PING, headers=ping_headers(token)).status_code
                        log.append((started, status))

            thread = threading.Thread(target=loop)
            thread.start()
            deadline = time.monotonic() + 30
            while not any(status == 200 for _, status in log):  # the new token is accepted
                if time.monotonic() > deadline:
                    stop.set()
                    raise RuntimeError(f"the new token was never accepted: {log[-3:]}")
                time.sleep(0.01)
            subprocess.run([sys.executable, "-m", "mcptrace", "token", "revoke", f"looper-{i}", "--store",
                            str(store)], env=subprocess_env(), check=True, capture_output=True, timeout=60)
            returned = time.monotonic()
            time.sleep(0.3)
            stop.set()
            thread.join()
            after = [(s, st) for s, st in log if s > returned and st == 200]
            admitted_after += len(after)
            late += [(s - returned) * 1000 for s, _ in after]
    return {"revocations": rounds, "admitted_after_return": admitted_after,
            "latest_ms": round(max(late), 1) if late else 0.0}


def redis_stopped(tmp: Path) -> dict[str, Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        return {"skipped": "redis-server is not installed"}
    port = _free_port()
    redis = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
                              "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        store = tmp / "tokens-redis.json"
        token = add_token(store, "caller")
        with server(tmp / "redis", "--tokens", str(store), "--redis-url", f"redis://127.0.0.1:{port}/0") as srv:
            headers, body = ping_headers(token), PING
            with httpx.Client(timeout=30) as http:
                for _ in range(20):
                    http.post(srv.url, json=body, headers=headers)
                os.kill(redis.pid, signal.SIGSTOP)
                timings, statuses = [], []
                try:
                    for _ in range(40):
                        start = time.perf_counter()
                        statuses.append(http.post(srv.url, json=body, headers=headers).status_code)
                        timings.append((time.perf_counter() - start) * 1000)
                finally:
                    os.kill(redis.pid, signal.SIGCONT)
                httpx.get(f"{srv.base_url}/health", timeout=10)
            time.sleep(0.5)
            lines = [json.loads(x) for x in srv.log_file.read_text().splitlines()]
            about = [x for x in lines if x.get("service") == "redis"]
    finally:
        redis.kill()
        redis.wait(10)
    return {"requests_while_stopped": len(timings), "statuses": sorted(set(statuses)),
            "p50_ms": round(statistics.median(timings), 1), "max_ms": round(max(timings), 1),
            "log_lines_about_redis": len(about),
            "transitions": [x.get("breaker_state") or x.get("status") for x in about]}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenarios", nargs="*", default=["uploads", "revoke", "redis"])
    parser.add_argument("--rounds", type=int, default=20, help="revocations in the revoke scenario")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {"load_average": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "uploads" in args.scenarios:
            for with_token in (False, True):
                row = uploads(work, with_token)
                results[f"uploads_{'token' if with_token else 'no_token'}"] = row
                print(json.dumps(row))
        if "revoke" in args.scenarios:
            results["revoke"] = revoke(work, args.rounds)
            print(json.dumps(results["revoke"]))
        if "redis" in args.scenarios:
            results["redis"] = redis_stopped(work)
            print(json.dumps(results["redis"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
