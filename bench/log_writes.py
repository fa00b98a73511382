"""What writing the log before each answer costs, measured on the log writer alone.

    python bench/log_writes.py [--requests 20000] [--rounds 5]

Each simulated request emits the three lines a tools/call writes
(`request_received`, `tool_call`, `response_sent`, shaped like the server's)
through `EventLogger`, then commits as the request log does before an answer
leaves. Three ways of writing are compared, in alternating rounds, to a file
on the local disk: before each answer (mcptrace's default: one `write` per
answer), one `write` per line, and only every 0.2 s from a background thread
(no kill -9 guarantee). Reported per request: process CPU time (the background
thread included), wall time, and `write` system calls (`/proc/self/io`); the
median of the rounds. The server-level comparison is
`python bench/instrumentation.py --log-writes`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcptrace import EventLogger, LogSink  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "before each answer": {},
    "per line": {"buffer_bytes": 0},
    "every 0.2 s": {"write_before_response": False},
}
FIELDS = {"session_id": "3f9c1e0a5b7d4c2e8f6a1b3c5d7e9f0a", "jsonrpc_id": "17", "method": "tools/call",
          "caller_id": "agent-7", "tenant": "acme", "tool_name": "search_database", "transport": "http",
          "protocol_version": "2025-11-25", "client_name": "bench", "client_version": "1"}


def _write_calls() -> int:
    return int(Path("/proc/self/io").read_text().split("syscw:")[1].split()[0])


def run(mode: str, requests: int, workdir: Path) -> dict[str, float]:
    path = workdir / f"{mode.replace(' ', '-')}.log"
    path.unlink(missing_ok=True)
    logger = EventLogger(LogSink(path, **MODES[mode]))
    cpu, wall, writes = time.process_time(), time.perf_counter(), _write_calls()
    for i in range(requests):
        request_id = f"req-{i:016x}"
        logger.emit("request_received", mcp_request_id=request_id, **FIELDS)
        logger.emit("tool_call", mcp_request_id=request_id, arguments_hash="a" * 16, result_hash="b" * 16,
                    input_token_count=12, duration_ms=1.234, status="success", error=None, downstream_calls=[],
                    **FIELDS)
        logger.emit("response_sent", mcp_request_id=request_id, duration_ms=1.3, status="success", **FIELDS)
        logger.commit()
    logger.close()
    return {"cpu_us": (time.process_time() - cpu) / requests * 1e6,
            "wall_us": (time.perf_counter() - wall) / requests * 1e6,
            "writes": (_write_calls() - writes) / requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="mcptrace-log-bench-") as tmp:
        for _ in range(args.rounds):
            for mode in MODES:
                results[mode].append(run(mode, args.requests, Path(tmp)))
    base = statistics.median(r["cpu_us"] for r in results["every 0.2 s"])
    print(f"medians of {args.rounds} rounds of {args.requests} requests (3 lines each):")
    for mode, rs in results.items():
        cpu = statistics.median(r["cpu_us"] for r in rs)
        wall = statistics.median(r["wall_us"] for r in rs)
        writes = statistics.median(r["writes"] for r in rs)
        print(f"  {mode:>18}: {cpu:5.1f} us CPU, {wall:5.1f} us wall, {writes:4.2f} writes per request "
              f"(+{cpu - base:4.1f} us CPU against every 0.2 s)")
    print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
