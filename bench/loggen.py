"""A fast generator of realistic mcptrace logs, for benchmarks and large-file tests.

The lines have the writer's exact shape (key order, timestamp format, nulls):
agents in handshake-era sessions and on the sessionless wire, several tools
with log-normal latencies, downstream calls, a few percent of errors, a
looping agent now and then, and server restarts. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import orjson

TOOLS = {
    # tool: (median ms, sigma, error rate, downstream service or None)
    "search_database": (12.0, 0.8, 0.02, "sqlite"),
    "fetch_upstream": (45.0, 0.9, 0.06, "upstream"),
    "get_config": (0.4, 0.3, 0.001, None),
    "run_report": (350.0, 0.5, 0.04, "sqlite"),
    "ping": (0.1, 0.2, 0.0, None),
}
_TOOL_NAMES = list(TOOLS)
_WEIGHTS = [40, 25, 15, 5, 15]


def _stamp(t: float) -> str:
    second = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((t - second) * 1000):03d}Z"


def generate(
    path: Path, *, size_bytes: int, seed: int = 7, start: float = 1_795_000_000.0
) -> dict[str, object]:
    """Write about `size_bytes` of log lines; returns facts the benchmark looks up (ids, counts)."""
    rng = random.Random(seed)
    dumps = orjson.dumps
    t = start
    written = 0
    n_req = 0
    failed_ids: list[str] = []
    some_ids: list[str] = []
    agents = [(f"agent-{i:03d}", f"{rng.getrandbits(64):016x}" if i % 2 else None) for i in range(40)]
    with open(path, "wb", buffering=4 * 1024 * 1024) as out:
        out.write(
            dumps(
                {
                    "timestamp": _stamp(t),
                    "level": "info",
                    "event": "server_started",
                    "mcp_request_id": None,
                    "message": "mcptrace 0.1.0 serving http://127.0.0.1:8765/mcp",
                    "transport": "http",
                    "schema_version": 1,
                }
            )
            + b"\n"
        )
        buf: list[bytes] = []
        loop_left = 0
        loop_agent = agents[0]
        while written < size_bytes:
            t += rng.expovariate(400.0)
            if loop_left:
                caller, session = loop_agent
                tool, args = "search_database", "loopargs00000000"
                loop_left -= 1
            else:
                caller, session = agents[rng.randrange(len(agents))]
                tool = rng.choices(_TOOL_NAMES, _WEIGHTS)[0]
                args = f"{rng.getrandbits(64):016x}"
                if rng.random() < 0.0005:
                    loop_agent, loop_left = (caller, session), rng.randrange(6, 40)
            median, sigma, err_rate, service = TOOLS[tool]
            duration = round(rng.lognormvariate(0, sigma) * median, 3)
            failed = rng.random() < err_rate
            rid = f"req-{rng.getrandbits(64):016x}"
            n_req += 1
            base = {
                "mcp_request_id": rid,
                "session_id": session,
                "jsonrpc_id": str(n_req % 5000),
                "method": "tools/call",
                "caller_id": caller,
                "tenant": "acme",
                "transport": "http",
                "tool_name": tool,
            }
            level = "warning" if failed else "info"
            status = "error" if failed else "success"
            error = f"{tool} failed: upstream returned 503" if failed else None
            downstream = []
            buf.append(
                dumps(
                    {
                        "timestamp": _stamp(t),
                        "level": "info",
                        "event": "request_received",
                        **base,
                        "schema_version": 1,
                    }
                )
            )
            if service is not None:
                d_ms = round(duration * 0.8, 3)
                call = {
                    "service": service,
                    "query_hash": f"{rng.getrandbits(48):012x}",
                    "duration_ms": d_ms,
                    "status": status,
                    "error": error,
                }
                downstream.append(call)
                buf.append(
                    dumps(
                        {
                            "timestamp": _stamp(t + d_ms / 1000),
                            "level": level,
                            "event": "downstream_call",
                            **base,
                            **call,
                            "schema_version": 1,
                        }
                    )
                )
            end = _stamp(t + duration / 1000)
            buf.append(
                dumps(
                    {
                        "timestamp": end,
                        "level": level,
                        "event": "tool_call",
                        **base,
                        "arguments_hash": args,
                        "result_hash": "res" + args[3:] if not failed else "failed",
                        "input_token_count": rng.randrange(2, 400),
                        "duration_ms": duration,
                        "status": status,
                        "error": error,
                        "error_code": None,
                        "downstream_calls": downstream,
                        "schema_version": 1,
                    }
                )
            )
            buf.append(
                dumps(
                    {
                        "timestamp": end,
                        "level": level,
                        "event": "response_sent",
                        **base,
                        "duration_ms": duration,
                        "status": status,
                        "error": error,
                        "error_code": None,
                        "schema_version": 1,
                    }
                )
            )
            if failed and len(failed_ids) < 1000:
                failed_ids.append(rid)
            if n_req % 1000 == 0 and len(some_ids) < 1000:
                some_ids.append(rid)
            if len(buf) >= 20000:
                chunk = b"\n".join(buf) + b"\n"
                out.write(chunk)
                written += len(chunk)
                buf = []
        if buf:
            chunk = b"\n".join(buf) + b"\n"
            out.write(chunk)
            written += len(chunk)
    return {"requests": n_req, "bytes": written, "failed_ids": failed_ids, "some_ids": some_ids}


def main() -> None:
    parser = argparse.ArgumentParser(description="write a realistic mcptrace log of a given size")
    parser.add_argument("path", type=Path)
    parser.add_argument("--size-mb", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    t0 = time.perf_counter()
    facts = generate(args.path, size_bytes=int(args.size_mb * 1e6), seed=args.seed)
    print(
        f"{facts['bytes']} bytes, {facts['requests']} requests in {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
