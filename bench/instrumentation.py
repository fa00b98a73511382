"""What full instrumentation costs: the bare SDK server against the same server under mcptrace.

    python bench/instrumentation.py [--seconds 8] [--sessions 4] [--rounds 3] [--log-writes]

Both servers run the same tool under uvicorn on 127.0.0.1, each in its own
process. The instrumented one adds mcptrace's telemetry as `mcptrace serve` sets
it up: `instrument()`, JSON log lines to a file, every span (the SDK's SERVER
span with mcptrace's attributes) and the metrics exported over OTLP/HTTP to a
live oteltap receiver (its own process), and `/metrics`.
Spans are exported both ways `MCPTRACE_SPAN_EXPORT` offers: encoded and sent
on the server's batch thread (`thread export`), or by a child process (`process
export`); "server CPU" sums the server and every process under it, so the
child's work is counted. A further configuration samples 10% of traces
(`OTEL_TRACES_SAMPLER`, default export path);
`--otlp-logs` adds the opt-in OTLP log bridge; `--breakdown` adds the bare server
with only the SDK's own spans exported (a plain `TracerProvider`, no mcptrace), and the
instrumented server with no spans at all (`OTEL_TRACES_EXPORTER=none`) and with spans
created but never sampled (`OTEL_TRACES_SAMPLER=always_off`), to show what the spans cost;
`--downstream` adds the instrumented server whose tool wraps its lookup in `downstream()`
(a CLIENT span, a log line and a metric more per call). Every instrumented row
writes its log lines to the OS before each answer leaves (what makes kill -9 lose
no answered request); `--log-writes` adds the default configuration with the log
written one `write` per line, and written only every 0.2 s by a background
thread (the cheaper, not durable way), to show what durability costs;
"writes" counts the server's `write`-family system calls per call
(`/proc/PID/io`; socket sends are not among them), which the log's mode decides;
"receiver" is the OTLP receiver's CPU per call, which the server's configuration
causes but which runs on the same two cores as the server and the load generator.
`--hot-path` instead times, in this process, what recording one tools/call's metrics costs:
the tool counter and histogram alone (as before the per-caller counter and the loop watch),
then with the caller's count and the loop watch (a new call each time, and the same call
repeated, the worst case), and the bounded labels (tool, caller) worked out per call.
The load is the same for every configuration: `--sessions` concurrent Streamable
HTTP sessions (JSON responses; a light httpx client, so the load generator is not
what saturates first) calling `tools/call` back to back for `--seconds` after a
warm-up. Rounds alternate between the configurations so background load hits all;
the median of the rounds is reported for each figure, and the ratios of those medians.
Everything stops by itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: When the log's lines reach the OS (`BENCH_LOG_WRITES`): mcptrace's default, before each answer leaves
#: (one write per answer, batching what is pending); one write per line; or only every 0.2 s from a
#: background thread, as before the kill -9 guarantee (an answered request's lines may then be lost).
LOG_WRITES: dict[str, dict[str, Any]] = {
    "before response": {},
    "per line": {"buffer_bytes": 0},
    "every 0.2 s": {"write_before_response": False},
}
TABLE = {f"k{i}": f"value {i}" for i in range(100)}
#: Seconds between two scrapes of `/metrics` during a measurement (Prometheus's are 15 to 60 s apart).
SCRAPE_EVERY = 5.0


# -- the two servers (run in a child process) ----------------------------------

def build_server(with_downstream: bool) -> Any:
    from mcp.server import MCPServer

    import mcptrace

    server: Any = MCPServer("bench")
    if with_downstream:
        @server.tool()
        async def lookup(key: str) -> dict[str, Any]:
            async with mcptrace.downstream("table", f"GET {key}"):
                value = TABLE.get(key)
            return {"key": key, "value": value}
    else:
        @server.tool()
        async def lookup(key: str) -> dict[str, Any]:
            value = TABLE.get(key)
            return {"key": key, "value": value}

    return server


def serve(mode: str, ready: Path, workdir: Path) -> None:
    import uvicorn

    server = build_server(mode == "downstream")
    telemetry = None
    if mode == "sdk-spans":
        # The bare server with only the SDK's own SERVER span recorded and exported: the part of the
        # tracing cost that any OpenTelemetry setup of an SDK server pays, mcptrace or not.
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    elif mode != "bare":
        import mcptrace

        # What a user writes: one call, exporters from the OTEL_* variables, /metrics on the app.
        log_file = workdir / f"bench-{os.getpid()}.log"
        writes = LOG_WRITES[os.environ.get("BENCH_LOG_WRITES", "before response")]
        if writes:
            logger = mcptrace.EventLogger(mcptrace.LogSink(log_file, **writes))
            telemetry = mcptrace.instrument(server, logger=logger)
        else:
            telemetry = mcptrace.instrument(server, log_file=log_file)
    # IPPROTO_TCP spelled out, as `mcptrace serve` does, so asyncio turns Nagle's algorithm off: with
    # it on, every response on a kept-alive connection waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    # JSON responses (not SSE streams) for both servers: one body per call, cheap for the load generator.
    app = server.streamable_http_app(json_response=True)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    original = uv.startup

    async def startup(sockets: Any = None) -> None:
        await original(sockets=sockets)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")
        tmp.replace(ready)

    uv.startup = startup  # type: ignore[method-assign]
    try:
        uv.run(sockets=[sock])
    finally:
        if telemetry is not None:
            telemetry.shutdown()


# -- the driver ------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], ready: Path, env: dict[str, str], timeout: float = 60) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{args} did not start")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    from mcptrace.testing import stop_process

    stop_process(proc, timeout=20)


PROTOCOL = "2025-11-25"
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def _session(http: Any, url: str) -> dict[str, str]:
    """Open a session with the initialize handshake; returns the headers later requests carry."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
    response = await http.post(url, json=init, headers=HEADERS)
    response.raise_for_status()
    headers = {**HEADERS, "mcp-protocol-version": PROTOCOL}
    if "mcp-session-id" in response.headers:
        headers["mcp-session-id"] = response.headers["mcp-session-id"]
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return headers


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """User + system CPU time of a server and of every process under it (Linux): a span export child
    works for the server, so it counts. Children already waited for are in the server's own
    `cutime`/`cstime`. To compare servers on a machine shared with other load.
    Returns (all of it, the part of the processes under the server)."""
    stats = {int(p.name): st for p in Path("/proc").iterdir() if p.name.isdigit() and (st := _stat(int(p.name)))}
    root = stats.get(pid)
    if root is None:
        return None
    ticks = own = sum(int(v) for v in root[11:15])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, st in stats.items():
            if int(st[1]) == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
                ticks += int(st[11]) + int(st[12])
    hz = os.sysconf("SC_CLK_TCK")
    return ticks / hz, (ticks - own) / hz


def _write_calls(pid: int) -> int | None:
    """`write`-family system calls the server process made so far (Linux `/proc/PID/io`; socket sends
    are not among them): how often the log is written, counted rather than timed."""
    try:
        return int(Path(f"/proc/{pid}/io").read_text().split("syscw:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


async def _load(
    url: str, *, pid: int, sessions: int, seconds: float, warmup: float, rate: float | None = None,
    receiver: int | None = None,
) -> dict[str, float]:
    """`sessions` clients calling tools/call back to back (a light client: the servers are measured).

    With `rate`, calls start on a fixed schedule instead (open loop, `rate` a second over the
    sessions), and each latency counts from its scheduled start: every server then does the same
    work in the same time, so CPU per call and latency compare without the throughput's swings.
    `/metrics` is scraped every `SCRAPE_EVERY` seconds meanwhile, as Prometheus would. The OTLP
    receiver's CPU (`receiver`, its pid) is sampled too: it shares the machine's cores with the
    server and the client, as a collector on another host would not.
    """
    import anyio
    import httpx

    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds

    async def call(http: httpx.AsyncClient, headers: dict[str, str], n: int, i: int, scheduled: float) -> None:
        nonlocal errors
        body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "lookup", "arguments": {"key": f"k{(n * 31 + i) % 100}"}}}
        response = await http.post(url, json=body, headers=headers)
        done = time.perf_counter()
        if scheduled >= measure_from:
            latencies.append(done - scheduled)
            result = response.json() if response.status_code == 200 else {}
            errors += "result" not in result or bool(result["result"].get("isError"))

    async def session(http: httpx.AsyncClient, n: int) -> None:
        headers = await _session(http, url)
        i = 0
        if rate is None:
            while (now := time.perf_counter()) < stop_at:
                i += 1
                await call(http, headers, n, i, now)
            return
        interval = sessions / rate  # this session's share of the schedule
        scheduled = start + n / rate
        while scheduled < stop_at:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)  # pacing the schedule, not waiting for the server
            i += 1
            await call(http, headers, n, i, scheduled)
            scheduled += interval

    cpu: list[tuple[float, float] | None] = []
    writes: list[int | None] = []
    received: list[tuple[float, float] | None] = []

    async def sample_cpu() -> None:
        await anyio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu.append(_cpu_seconds(pid))
        writes.append(_write_calls(pid))
        received.append(_cpu_seconds(receiver) if receiver else None)
        await anyio.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu.append(_cpu_seconds(pid))
        writes.append(_write_calls(pid))
        received.append(_cpu_seconds(receiver) if receiver else None)

    async def scrape(http: httpx.AsyncClient) -> None:
        metrics = url.removesuffix("/mcp") + "/metrics"
        while time.perf_counter() + SCRAPE_EVERY < stop_at:
            await anyio.sleep(SCRAPE_EVERY)
            await http.get(metrics)  # the bare server answers 404: the same request, no work

    with anyio.fail_after(warmup + seconds + 60):
        limits = httpx.Limits(max_connections=sessions + 1)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http, anyio.create_task_group() as tg:
            tg.start_soon(sample_cpu)
            tg.start_soon(scrape, http)
            for n in range(sessions):
                tg.start_soon(session, http, n)
    q = statistics.quantiles(latencies, n=100)
    cpu_ms = child_ms = writes_per_call = receiver_ms = float("nan")
    if len(received) == 2 and received[0] is not None and received[1] is not None:
        receiver_ms = (received[1][0] - received[0][0]) * 1000 / len(latencies)
    if len(writes) == 2 and writes[0] is not None and writes[1] is not None:
        writes_per_call = (writes[1] - writes[0]) / len(latencies)
    if len(cpu) == 2 and cpu[0] is not None and cpu[1] is not None:
        cpu_ms = (cpu[1][0] - cpu[0][0]) * 1000 / len(latencies)
        child_ms = (cpu[1][1] - cpu[0][1]) * 1000 / len(latencies)
    return {"calls": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "cpu_ms_per_call": cpu_ms,
            "child_cpu_ms_per_call": child_ms, "writes_per_call": writes_per_call,
            "receiver_cpu_ms_per_call": receiver_ms}


def hot_path(calls: int) -> None:
    """Microseconds per tools/call of the metric work on the request path, median of 5 runs each."""
    import timeit

    from opentelemetry.sdk.metrics import MeterProvider

    from mcptrace.telemetry._labels import FirstSeen, RegisteredTools
    from mcptrace.telemetry._metrics import ServerMetrics
    from mcptrace.telemetry._prometheus import PrometheusEndpoint

    endpoint = PrometheusEndpoint()
    provider = MeterProvider(metric_readers=[endpoint.reader])
    metrics = ServerMetrics(provider.get_meter("bench"))
    fast = ServerMetrics(provider.get_meter("bench-fast"), fast_histograms=True)
    operation = {"mcp.method.name": "tools/call", "network.transport": "tcp", "gen_ai.tool.name": "lookup"}
    tools, callers = RegisteredTools(None), FirstSeen(100)
    keys = [("agent-7", "lookup", f"{i:016x}", "r" * 16) for i in range(calls)]
    same = ("agent-7", "lookup", "a" * 16, "r" * 16)
    it = iter(range(10**12))

    def before() -> None:
        metrics.record_tool_call("lookup", "success", 0.001)

    def fresh_calls() -> None:
        metrics.record_tool_call("lookup", "success", 0.001, caller="agent-7", repeat=keys[next(it) % calls])

    def one_call_repeated() -> None:
        metrics.record_tool_call("lookup", "success", 0.001, caller="agent-7", repeat=same)

    def labels() -> None:
        tools.label("lookup")
        callers("agent-7")

    def sdk_histograms() -> None:
        metrics.record_tool_call("lookup", "success", 0.001, caller="agent-7", repeat=same)
        metrics.record_operation(operation, 0.001, "key")

    def own_histograms() -> None:
        fast.record_tool_call("lookup", "success", 0.001, caller="agent-7", repeat=same)
        fast.record_operation(operation, 0.001, "key")

    print(f"metric work per tools/call, {calls:,} calls a run, median of 5 runs:")
    rows = [("tool counter + histogram (before)", before),
            ("+ caller counter + loop watch, distinct calls", fresh_calls),
            ("+ caller counter + loop watch, one call repeated", one_call_repeated),
            ("bounded labels (tool, caller)", labels),
            ("a request's metrics, histograms through the SDK", sdk_histograms),
            ("a request's metrics, histograms aggregated here", own_histograms)]
    for name, fn in rows:
        runs = timeit.repeat(fn, number=calls, repeat=5)
        print(f"  {name:<50} {statistics.median(runs) / calls * 1e6:6.2f} us")
    print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    provider.shutdown()


def run_one(
    mode: str, workdir: Path, env: dict[str, str], args: argparse.Namespace, receiver: int,
) -> dict[str, float]:
    """One server: the closed loop (its req/s), then, with `--rate`, the paced load (its CPU and latency)."""
    import anyio

    ready = workdir / f"ready-{mode}-{time.monotonic_ns()}"
    command = [sys.executable, __file__, "--serve", mode, "--ready", str(ready), "--workdir", str(workdir)]
    proc = _start(command, ready, env)
    try:
        url = ready.read_text()
        closed = anyio.run(lambda: _load(url, pid=proc.pid, sessions=args.sessions, seconds=args.seconds,
                                         warmup=args.warmup, receiver=receiver))
        if not args.rate:
            return closed
        paced = anyio.run(lambda: _load(url, pid=proc.pid, sessions=args.sessions, seconds=args.seconds,
                                        warmup=args.warmup, rate=args.rate))
        return {"rps": closed["rps"], **{f"paced_{k}": v for k, v in paced.items()}, **{
            k: v for k, v in closed.items() if k != "rps"}}
    finally:
        _stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per server and round")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent client sessions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="also load each server at this many calls/s on a fixed schedule (open loop): "
                             "CPU per call and p50/p99 at the same work for every configuration")
    parser.add_argument("--otlp-logs", action="store_true", help="also measure the opt-in OTLP log bridge")
    parser.add_argument("--downstream", action="store_true",
                        help="also measure the instrumented server whose tool wraps its lookup in downstream()")
    parser.add_argument("--log-writes", action="store_true",
                        help="also measure the log written per line, and written only every 0.2 s (not durable)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure the instrumented server without spans and with unsampled spans")
    parser.add_argument("--only", help="comma-separated configurations to measure (bare is always one)")
    parser.add_argument("--hot-path", action="store_true",
                        help="time the per-call metric work in this process instead of the servers")
    parser.add_argument("--serve", choices=["bare", "sdk-spans", "instrumented", "downstream"], help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.ready, args.workdir)
        return 0
    if args.hot_path:
        hot_path(200_000)
        return 0

    load_at_start = os.getloadavg()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    port = _free_port()
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_SERVICE_NAME": "mcptrace-bench",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    })
    with tempfile.TemporaryDirectory(prefix="mcptrace-bench-") as tmp:
        workdir = Path(tmp)
        tap = subprocess.Popen([sys.executable, "-m", "oteltap", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            configs = {
                "bare": ("bare", {}),
                "thread export": ("instrumented", {"MCPTRACE_SPAN_EXPORT": "thread"}),
                "process export": ("instrumented", {"MCPTRACE_SPAN_EXPORT": "process"}),
                "sampled 10%": ("instrumented", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                                 "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
            }
            if args.downstream:
                configs["+ downstream"] = ("downstream", {})
            if args.log_writes:
                # The default rows write the log before each answer; these differ from "process export" in that only.
                for name in ("per line", "every 0.2 s"):
                    configs[f"log {name}"] = ("instrumented", {"MCPTRACE_SPAN_EXPORT": "process",
                                                               "BENCH_LOG_WRITES": name})
            if args.otlp_logs:
                configs["+ OTLP logs"] = ("instrumented", {"OTEL_LOGS_EXPORTER": "otlp"})
            if args.breakdown:
                configs["SDK spans only"] = ("sdk-spans", {})
                configs["no spans"] = ("instrumented", {"OTEL_TRACES_EXPORTER": "none"})
                configs["unsampled"] = ("instrumented", {"OTEL_TRACES_SAMPLER": "always_off"})
            if args.only:
                wanted = {"bare", *(name.strip() for name in args.only.split(","))}
                unknown = wanted - set(configs)
                if unknown:
                    parser.error(f"unknown configuration(s) {sorted(unknown)}; known: {sorted(configs)}")
                configs = {name: config for name, config in configs.items() if name in wanted}
            results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
            for r in range(args.rounds):
                for name, (mode, extra) in configs.items():
                    res = run_one(mode, workdir, {**env, **extra}, args, tap.pid)
                    results[name].append(res)
                    print(f"round {r + 1} {name:>14}: {res['rps']:7.1f} req/s  p50 {res['p50_ms']:6.2f} ms  "
                          f"p99 {res['p99_ms']:6.2f} ms  server CPU {res['cpu_ms_per_call']:5.2f} ms/call "
                          f"(children {res['child_cpu_ms_per_call']:4.2f})  "
                          f"writes {res['writes_per_call']:4.2f}/call  "
                          f"receiver {res['receiver_cpu_ms_per_call']:4.2f} ms/call  "
                          f"({int(res['calls'])} calls, {int(res['errors'])} errors)"
                          + (f"  paced {args.rate:g}/s: CPU {res['paced_cpu_ms_per_call']:5.2f} ms/call "
                             f"(children {res['paced_child_cpu_ms_per_call']:4.2f})  p50 {res['paced_p50_ms']:6.2f} "
                             f"p99 {res['paced_p99_ms']:6.2f} ms" if args.rate else ""),
                          flush=True)
        finally:
            _stop(tap)
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
               for name, rs in results.items()}
    b = medians["bare"]
    print(f"\nmedians of {args.rounds} rounds, {args.sessions} sessions, {args.seconds:g} s each "
          "(ratios against bare: req/s, and server CPU per call bare/config):")
    for name, r in medians.items():
        print(f"  {name:>14}  {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"server CPU {r['cpu_ms_per_call']:5.2f} ms/call (children {r['child_cpu_ms_per_call']:4.2f})  "
              f"writes {r['writes_per_call']:4.2f}/call  receiver {r['receiver_cpu_ms_per_call']:4.2f} ms/call  "
              f"ratio {r['rps'] / b['rps']:.3f}  "
              f"CPU ratio {b['cpu_ms_per_call'] / r['cpu_ms_per_call']:.3f}")
    keys = [("rps", "req/s"), ("cpu_ms_per_call", "server CPU"), ("p99_ms", "p99")]
    if args.rate:
        keys += [("paced_cpu_ms_per_call", "paced CPU"), ("paced_p50_ms", "paced p50"), ("paced_p99_ms", "paced p99")]
    print("\nratio to bare in the same round (each round runs every configuration back to back), median of rounds:")
    for name, rs in results.items():
        if name == "bare":
            continue
        cells = []
        for key, label in keys:
            ratios = [r[key] / bare[key] for r, bare in zip(rs, results["bare"], strict=True) if bare[key]]
            cells.append(f"{label} x{statistics.median(ratios):.2f}")
        print(f"  {name:>14}  " + "  ".join(cells))
    if args.rate:
        print(f"\npaced at {args.rate:g} calls/s (the same work for every server), medians; ratios to bare:")
        for name, r in medians.items():
            cpu_ratio = r['paced_cpu_ms_per_call'] / b['paced_cpu_ms_per_call']
            print(f"  {name:>14}  server CPU {r['paced_cpu_ms_per_call']:5.2f} ms/call "
                  f"(children {r['paced_child_cpu_ms_per_call']:4.2f}) x{cpu_ratio:.2f}  "
                  f"p50 {r['paced_p50_ms']:6.2f} ms x{r['paced_p50_ms'] / b['paced_p50_ms']:.2f}  "
                  f"p99 {r['paced_p99_ms']:6.2f} ms x{r['paced_p99_ms'] / b['paced_p99_ms']:.2f}")
    print("  goals, fully instrumented against bare: req/s >= 0.95x, server CPU per call <= 1.2x, p99 <= 1.2x")
    print(f"  load average at the end of the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs (at the start: {' '.join(f'{x:.1f}' for x in load_at_start)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
