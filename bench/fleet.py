"""Benchmark the fleet dataset: a simulated fleet shipped into an S3 server on loopback. One command:

    python bench/fleet.py                     # 10 replicas, 2 GB of logs (about ten minutes on a quiet machine)
    python bench/fleet.py --gb 0.1            # a quick check

Each replica's log is generated (`loggen`, its own seed and hour) and shipped with `mcptrace index LOGS
--dest s3://... --replica rN` into moto, run in server mode on 127.0.0.1 as a process of its own. Measured
in this run, on this machine:

- index-and-ship throughput per core: log bytes and lines divided by the CPU seconds of the shipping
  processes (user + system, from `wait4`), so a busy machine lengthens the wall time but not the figure;
  the S3 server's own CPU is reported beside it;
- the dataset's size against the logs': the Parquet rows, and mcptrace's lookup tables (`_mcptrace/`);
- `mcptrace chain ID URL`: time and the bytes it read (as it reports them), for ids of several replicas;
- `mcptrace stats URL`, and `mcptrace stats` on a local copy of the dataset against DuckDB's
  `quantile_cont` query of docs/fleet.md over that copy's Parquet files (DuckDB reaches S3 only through
  its downloaded httpfs extension).

The logs are generated into a temporary directory and deleted afterwards, unless `--workdir` keeps
them for the next run. The load average is printed with the figures: quote it with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from loggen import generate  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}
BUCKET = "fleet-bench"
DUCKDB_SCRIPT = """
import sys, time, duckdb
con = duckdb.connect()
con.execute(open(sys.argv[2]).read())
t = time.perf_counter()
rows = con.execute(open(sys.argv[3]).read()).fetchall()
print(time.perf_counter() - t, len(rows))
"""


def env_for(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CREDENTIALS)
    env["AWS_ENDPOINT_URL"] = endpoint
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds of the process and its children, result) of one command."""
    before = os.times()
    t = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall, cpu, done


def doc_query(name: str) -> str:
    text = (ROOT / "docs" / "fleet.md").read_text()
    match = re.search(r"<!-- fleet-sql: duckdb " + name + r" -->\n```sql\n(.*?)```", text, flags=re.S)
    assert match, name
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--gb", type=float, default=2.0, help="logs of the whole fleet, in GB (default 2)")
    parser.add_argument("--workdir", type=Path, help="keep the generated logs here (reused by the next run)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mcptrace-fleet-bench-"))
    try:
        run(work, replicas=args.replicas, total=int(args.gb * 1e9))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, *, replicas: int, total: int) -> None:
    logs = work / "logs"
    each = total // replicas
    facts: dict[str, Any] = {}
    t = time.perf_counter()
    for i in range(replicas):
        folder = logs / f"r{i + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "mcptrace.log"
        marker = folder / "facts.json"
        if not (marker.exists() and path.exists() and abs(path.stat().st_size - each) < each * 0.05):
            marker.write_text(json.dumps(generate(path, size_bytes=each, seed=100 + i,
                                                  start=1_795_000_000.0 + 600.0 * i)))
        facts[folder.name] = json.loads(marker.read_text())
    log_bytes = sum(p.stat().st_size for p in logs.rglob("mcptrace.log"))
    lines = sum(p.read_bytes().count(b"\n") for p in logs.rglob("mcptrace.log"))
    print(f"logs: {replicas} replicas, {log_bytes / 1e9:.2f} GB, {lines:,} lines "
          f"(generated or reused in {time.perf_counter() - t:.0f}s)", file=sys.stderr)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = env_for(endpoint)
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("moto did not start") from None
                time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=10).close()
        measure(work, logs, facts, env, moto.pid, log_bytes=log_bytes, lines=lines)
    finally:
        moto.kill()
        moto.wait(10)


def measure(work: Path, logs: Path, facts: dict[str, Any], env: dict[str, str], moto_pid: int, *,
            log_bytes: int, lines: int) -> None:
    url = f"s3://{BUCKET}/fleet"
    mcptrace = [sys.executable, "-m", "mcptrace"]
    rows: list[tuple[str, str]] = []

    moto_cpu = cpu_seconds(moto_pid)
    ship_wall = ship_cpu = 0.0
    for folder in sorted(logs.iterdir()):
        wall, cpu, _ = timed([*mcptrace, "index", str(folder / "mcptrace.log"), "--dest", url,
                              "--replica", folder.name, "--format", "json"], env)
        ship_wall += wall
        ship_cpu += cpu
    moto_cpu = cpu_seconds(moto_pid) - moto_cpu
    rows.append(("index + ship, per CPU-second",
                 f"{log_bytes / 1e6 / ship_cpu:.1f} MB/s, {lines / ship_cpu:,.0f} lines/s "
                 f"({ship_cpu:.0f} CPU-s for {log_bytes / 1e9:.2f} GB; wall {ship_wall:.0f} s one replica "
                 f"at a time; the S3 server used {moto_cpu:.1f} CPU-s more)"))

    os.environ.update({k: env[k] for k in (*CREDENTIALS, "AWS_ENDPOINT_URL")})
    from mcptrace.logs._objects import Objects

    objects = Objects(url)
    sizes = objects.list("")
    parquet = sum(v for k, v in sizes.items() if k.endswith(".parquet"))
    tables = sum(v for k, v in sizes.items() if k.startswith("_mcptrace/"))
    rows.append(("dataset size",
                 f"{(parquet + tables) / 1e6:.0f} MB = {100 * (parquet + tables) / log_bytes:.1f}% of the logs "
                 f"(Parquet {100 * parquet / log_bytes:.1f}%, lookup tables {100 * tables / log_bytes:.1f}%; "
                 f"{len(sizes)} objects)"))

    chain_times, chain_read = [], []
    for name in sorted(facts)[:: max(1, len(facts) // 4)]:
        rid = facts[name]["some_ids"][len(facts[name]["some_ids"]) // 2]
        wall, _, done = timed([*mcptrace, "chain", rid, url, "--format", "json"], env)
        assert rid in done.stdout
        chain_times.append(wall)
        found = re.search(r"read ([\d.]+) MB of ([\d.]+) MB", done.stderr)
        if found:
            chain_read.append((float(found.group(1)), float(found.group(2))))
    read = (f"; read {statistics.median(r for r, _ in chain_read):.2f} MB of "
            f"{chain_read[0][1]:.0f} MB ({100 * statistics.median(r / t for r, t in chain_read):.2f}%)"
            if chain_read else "")
    rows.append(("chain ID URL (whole command)", f"{statistics.median(chain_times):.2f} s median of "
                 f"{len(chain_times)} ids{read}"))

    wall, _, _ = timed([*mcptrace, "stats", url, "--format", "json"], env)
    rows.append(("stats URL (whole command)", f"{wall:.1f} s"))

    local = work / "copy"
    shutil.rmtree(local, ignore_errors=True)
    for key in sizes:  # the whole dataset: DuckDB reads its Parquet, mcptrace the dataset
        target = local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(objects.get(key))
    wall, _, done = timed([*mcptrace, "stats", str(local), "--format", "json"], env)
    rows.append(("stats FOLDER, the same dataset on local disk", f"{wall:.2f} s whole command"))
    view = work / "view.sql"
    view.write_text(doc_query("view").replace("s3://mcptrace-logs/fleet", str(local)))
    query = work / "stats.sql"
    query.write_text(doc_query("tool_stats"))
    wall, _, done = timed([sys.executable, "-c", DUCKDB_SCRIPT, "-", str(view), str(query)], env)
    duck_query = float(done.stdout.split()[0])
    rows.append(("DuckDB tool_stats on that local copy", f"{wall:.2f} s whole process ({duck_query:.2f} s the query)"))

    load = os.getloadavg()
    width = max(len(k) for k, _ in rows)
    print(f"fleet bench: {len(facts)} replicas, {log_bytes / 1e9:.2f} GB of logs, {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main()
