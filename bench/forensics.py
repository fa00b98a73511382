"""Benchmark the forensics layer against `rg -F` and DuckDB on generated logs. One command:

    python bench/forensics.py                   # 1 GB and 4 GB (about half an hour on a quiet machine)
    python bench/forensics.py --sizes 0.05      # a quick check

The logs are generated into a temporary directory and deleted afterwards (with
the index), unless `--workdir` keeps them for the next run.

Everything is measured in this run on this machine: whole-process wall time and
peak RSS (`/usr/bin/time`), warm page cache (median of a few runs), and cold for
the single-pass commands (the log's and the index's pages evicted with
posix_fadvise, so other processes' caches are left alone). Ratios compare each
mcptrace command with the tool doing the same job: `rg -F` for a request
lookup, DuckDB's `read_json` + `quantile_cont` for per-tool percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from loggen import generate  # noqa: E402

DUCKDB_SCRIPT = """
import sys, duckdb
q = '''select tool_name, count(*) calls, count(*) filter (where status = 'error') errors,
  quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95), quantile_cont(duration_ms, 0.99)
  from read_json(?, format = 'newline_delimited',
                 columns = {event: 'VARCHAR', tool_name: 'VARCHAR', duration_ms: 'DOUBLE', status: 'VARCHAR'})
  where event = 'tool_call' group by 1 order by 1'''
rows = duckdb.execute(q, [sys.argv[1]]).fetchall()
print(len(rows))
"""

IN_PROCESS_SCRIPT = """
import json, sys, time, statistics
path, rid = sys.argv[1], sys.argv[2]
from mcptrace.logs._lookup import lookup
from mcptrace.logs._toolsummary import indexed_tool_stats
def median(fn, n):
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times)
out = {}
out["chain_indexed"] = median(lambda: lookup([path], value=rid), 21)
out["chain_unindexed"] = median(lambda: lookup([path], value=rid, use_index=False), 3)
out["stats_summary"] = median(lambda: indexed_tool_stats([path]), 5)
from mcptrace.logs._refusals import REFUSAL_COLUMNS, REFUSAL_EVENTS
cols = ["tool_name", "status", "duration_ms", *REFUSAL_COLUMNS]  # what `mcptrace stats` reads
from mcptrace.analysis import load, tool_stats
events = ["tool_call", *REFUSAL_EVENTS]
out["stats_indexed"] = median(lambda: tool_stats(load([path], columns=cols, events=events).frame).collect(), 5)
out["stats_unindexed"] = median(
    lambda: tool_stats(load([path], columns=cols, events=events, use_index=False).frame).collect(), 3)
print(json.dumps(out))
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    # Measure what users run: with bytecode caches (written on the first run, reused after).
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    return e


def timed(cmd: list[str]) -> tuple[float, float, str, float]:
    """(wall seconds, peak RSS in MB, stdout, peak private memory in MB) of one whole process.

    Peak RSS (from GNU time) counts the pages of files the process memory-maps,
    which stay in the page cache and can be reclaimed at any time; the private
    (anonymous) memory is what the process itself allocated, sampled every few
    milliseconds from /proc.
    """
    gnu_time = shutil.which("time") or "/usr/bin/time"
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        wrapped = Path(gnu_time).exists()
        full = [gnu_time, "-f", "%e %M", "-o", tf.name, *cmd] if wrapped else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        anon = _PeakPrivate(proc.pid, child=wrapped)
        anon.start()
        out, err = proc.communicate(timeout=3600)
        wall = time.perf_counter() - start
        anon.join()
        if proc.returncode not in (0, 1) or "Traceback" in err:  # rg exits 1 when nothing matches
            raise RuntimeError(f"{cmd} failed: {err[-2000:]}")
        peak = float("nan")
        text = Path(tf.name).read_text().split()
        if len(text) >= 2:
            peak = int(text[-1]) / 1024
    return wall, peak, out, anon.peak_kb / 1024


class _PeakPrivate(threading.Thread):
    """Samples RssAnon of a process (or of its only child, under GNU time) until it exits."""

    def __init__(self, pid: int, *, child: bool) -> None:
        super().__init__(daemon=True)
        self.pid, self.child, self.peak_kb = pid, child, 0

    def run(self) -> None:
        target = None
        while Path(f"/proc/{self.pid}").exists():
            try:
                if target is None:
                    kids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
                    target = int(kids[0]) if self.child and kids else (None if self.child else self.pid)
                if target is not None:
                    for line in Path(f"/proc/{target}/status").read_text().splitlines():
                        if line.startswith("RssAnon:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            status = Path(f"/proc/{self.pid}/stat")
            try:
                if status.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return
            except (OSError, IndexError):
                return
            time.sleep(0.005)


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (only theirs)."""
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for p in files:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(16 * 1024 * 1024):
            pass


def measure(cmd: list[str], *, repeat: int, cold: list[Path] | None = None) -> dict[str, float]:
    runs = [timed(cmd) for _ in range(repeat)]
    result = {"warm": statistics.median(r[0] for r in runs), "peak_mb": max(r[1] for r in runs),
              "private_mb": max(r[3] for r in runs)}
    if cold is not None:
        evict(cold)
        result["cold"] = timed(cmd)[0]
        for p in cold:
            if p.is_file():
                warm(p)
    return result


def corrupt_copy(log: Path, target: Path, *, every: int = 1000) -> int:
    """`log` with one line in `every` damaged the ways real logs are: torn by a crash (half a line, then
    the next one), bytes that are not UTF-8, garbage. Returns the number of damaged lines."""
    damaged = 0
    with open(log, "rb") as src, open(target, "wb", buffering=4 * 1024 * 1024) as out:
        for i, line in enumerate(src):
            if i % every == every // 2:
                kind = damaged % 3
                damaged += 1
                if kind == 0:
                    line = line[: len(line) // 2] + b"\n"
                elif kind == 1:
                    line = line[:20] + b"\xff\xfe" + line[20:]
                else:
                    line = b"#&%! not a log line\n"
            out.write(line)
    return damaged


def corrupt_rows(log: Path, *, repeat: int) -> list[tuple[str, dict[str, float], str | None]]:
    """`stats` on the log, then on a copy with 0.1% damaged lines, side by side (each damaged line is set
    aside in the same pass: the goal is at most 1.1x the clean log)."""
    py = sys.executable
    bad = log.with_name(log.stem + "-corrupt.log")
    if not bad.exists():
        corrupt_copy(log, bad)
    rows: list[tuple[str, dict[str, float], str | None]] = []
    for name, path in (("mcptrace stats (unindexed, clean)", log), ("mcptrace stats (unindexed, 0.1% corrupt)", bad)):
        warm(path)
        cmd = [py, "-m", "mcptrace", "stats", str(path), "--no-index", "--format", "json"]
        print(f"  {name} ...", file=sys.stderr, flush=True)
        rows.append((name, measure(cmd, repeat=repeat), "mcptrace stats (unindexed, clean)" if path == bad else None))
    return rows


def print_rows(rows: list[tuple[str, dict[str, float], str | None]]) -> None:
    by_name = {name: m for name, m, _ in rows}
    print("| command | warm (s) | cold (s) | peak RSS (MB) | peak private (MB) | warm vs baseline |")
    print("|---|---:|---:|---:|---:|---|")
    for name, m, base in rows:
        ratio = ""
        if base and base in by_name:
            b = by_name[base]
            ratio = (f"{m['warm'] / b['warm']:.2f}x {base}; RSS {m['peak_mb'] / b['peak_mb']:.2f}x, "
                     f"private {m['private_mb'] / max(b['private_mb'], 1):.2f}x")
        cold = f"{m['cold']:.2f}" if "cold" in m else ""
        print(f"| {name} | {m['warm']:.2f} | {cold} | {m['peak_mb']:.0f} | {m['private_mb']:.0f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="1,4", help="log sizes in GB, comma-separated (default 1,4)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None,
        help="where to keep the generated logs, reused by the next run (default: a temporary directory, deleted)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="warm runs of each command (the median is kept)")
    parser.add_argument(
        "--corrupt-only", action="store_true", help="only the clean versus 0.1%% corrupt rows (quick)"
    )
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]

    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mcptrace-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    goals: list[tuple[float, dict[str, float]]] = []
    try:
        for size_gb in sizes:
            goals.append(
                (size_gb, bench_size(size_gb, workdir, repeat=args.repeat, keep=keep, corrupt_only=args.corrupt_only))
            )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"Goals ({os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end):")
    print()
    print("| log | index time (s) | index peak RSS (MB) | stats unindexed / DuckDB: time, RSS "
          "| chain unindexed / rg -F: time |")
    print("|---|---:|---:|---|---|")
    for _, g in goals:
        if not g:
            continue  # --corrupt-only
        rg = f"{g['chain_vs_rg']:.2f}x" if "chain_vs_rg" in g else "(no rg)"
        print(f"| {g['gb']:.2f} GB | {g['index_s']:.1f} | {g['index_peak_mb']:.0f} (goal <= 400) "
              f"| {g['stats_vs_duckdb']:.2f}x, {g['stats_rss_vs_duckdb']:.2f}x (goal <= 1.0x) "
              f"| {rg} (goal <= 1.5x) |")


def bench_size(
    size_gb: float, workdir: Path, *, repeat: int, keep: bool, corrupt_only: bool = False
) -> dict[str, float]:
    """Every row for one generated log; the log and its index are deleted afterwards unless `keep`."""
    log = workdir / f"bench-{size_gb:g}gb.log"
    facts_file = log.with_suffix(".facts.json")
    index_root = log.parent / ".mcptrace-index"
    if not (log.exists() and facts_file.exists()):
        free = shutil.disk_usage(workdir).free
        if free < size_gb * 1e9 * 1.5:
            raise SystemExit(f"{workdir}: {free / 1e9:.1f} GB free, a {size_gb:g} GB log and its index need more")
        t = time.perf_counter()
        facts = generate(log, size_bytes=int(size_gb * 1e9))
        facts_file.write_text(json.dumps(facts))
        print(
            f"generated {log.stat().st_size / 1e9:.2f} GB, {facts['requests']} requests "
            f"in {time.perf_counter() - t:.0f}s",
            file=sys.stderr,
        )
    try:
        return _bench_log(
            log, json.loads(facts_file.read_text()), index_root, repeat=repeat, corrupt_only=corrupt_only
        )
    finally:
        shutil.rmtree(index_root, ignore_errors=True)
        if not keep:
            log.unlink(missing_ok=True)
            facts_file.unlink(missing_ok=True)


def _bench_log(
    log: Path, facts: dict[str, Any], index_root: Path, *, repeat: int, corrupt_only: bool
) -> dict[str, float]:
    shutil.rmtree(index_root, ignore_errors=True)
    rid = facts["failed_ids"][len(facts["failed_ids"]) // 2]
    py = sys.executable
    load_at_start = os.getloadavg()[0]
    if corrupt_only:
        rows_only = corrupt_rows(log, repeat=repeat)
        print(
            f"\nLog: {log.stat().st_size / 1e9:.2f} GB; {os.cpu_count()} CPUs; load average "
            f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n"
        )
        print_rows(rows_only)
        return {}
    warm(log)
    rows: list[tuple[str, dict[str, float], str | None]] = []

    def step(
        name: str, cmd: list[str], *, repeat: int, cold: list[Path] | None, baseline: str | None
    ) -> None:
        print(f"  {log.name}: {name} ...", file=sys.stderr, flush=True)
        rows.append((name, measure(cmd, repeat=repeat, cold=cold), baseline))

    rg = shutil.which("rg")
    if rg:
        step("rg -F ID", [rg, "-F", rid, str(log)], repeat=repeat, cold=[log], baseline=None)
    step(
        "mcptrace chain (unindexed)",
        [py, "-m", "mcptrace", "chain", rid, str(log), "--no-index", "--format", "json"],
        repeat=repeat,
        cold=[log],
        baseline="rg -F ID",
    )
    step(
        "duckdb per-tool percentiles",
        [py, "-c", DUCKDB_SCRIPT, str(log)],
        repeat=repeat,
        cold=[log],
        baseline=None,
    )
    step(
        "mcptrace stats (unindexed)",
        [py, "-m", "mcptrace", "stats", str(log), "--no-index", "--format", "json"],
        repeat=repeat,
        cold=[log],
        baseline="duckdb per-tool percentiles",
    )
    print(f"  {log.name}: mcptrace index ...", file=sys.stderr, flush=True)
    load_at_index = os.getloadavg()[0]
    build = timed([py, "-m", "mcptrace", "index", str(log)])
    index_seconds = build[0]
    index_bytes = sum(p.stat().st_size for p in index_root.rglob("*") if p.is_file())
    parquet_bytes = sum(p.stat().st_size for p in index_root.rglob("*.parquet"))
    step(
        "mcptrace chain (indexed)",
        [py, "-m", "mcptrace", "chain", rid, str(log), "--format", "json"],
        repeat=repeat * 2,
        cold=[index_root],
        baseline="rg -F ID",
    )
    step(
        "mcptrace stats (indexed)",
        [py, "-m", "mcptrace", "stats", str(log), "--format", "json"],
        repeat=repeat,
        cold=[index_root],
        baseline="duckdb per-tool percentiles",
    )
    inproc = json.loads(timed([py, "-c", IN_PROCESS_SCRIPT, str(log), rid])[2])
    rows += corrupt_rows(log, repeat=repeat)

    by_name = {name: m for name, m, _ in rows}
    print()
    print(
        f"Log: {log.stat().st_size / 1e9:.2f} GB, {facts['requests']:,} requests; "
        f"{os.cpu_count()} CPUs; load average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print_rows(rows)
    print()
    print(
        f"Index: built in {index_seconds:.1f}s (load average {load_at_index:.1f}), peak RSS {build[1]:.0f} MB "
        f"(private {build[3]:.0f} MB); {index_bytes / 1e6:.1f} MB on disk "
        f"({log.stat().st_size / max(index_bytes, 1):.1f}x smaller than the log; Parquet alone "
        f"{parquet_bytes / 1e6:.1f} MB)"
    )
    duck = by_name["duckdb per-tool percentiles"]["warm"]
    print()
    print("In-process (imports excluded, median of several):")
    indexed_ms, unindexed_s = inproc["chain_indexed"] * 1000, inproc["chain_unindexed"]
    print(f"- chain, indexed: {indexed_ms:.1f} ms; unindexed: {unindexed_s:.2f} s")
    print(
        f"- per-tool percentiles, unindexed: {inproc['stats_unindexed']:.2f} s "
        f"({inproc['stats_unindexed'] / duck:.2f}x DuckDB's whole process); from the index's "
        f"per-tool summary (what `mcptrace stats` reads): {inproc['stats_summary'] * 1000:.1f} ms "
        f"({inproc['stats_summary'] / duck:.4f}x); from the Parquet index (`tool_stats(load(...))`): "
        f"{inproc['stats_indexed'] * 1000:.0f} ms ({inproc['stats_indexed'] / duck:.3f}x)"
    )
    stats, duckdb = by_name["mcptrace stats (unindexed)"], by_name["duckdb per-tool percentiles"]
    goals = {
        "gb": log.stat().st_size / 1e9,
        "index_s": index_seconds,
        "index_peak_mb": build[1],
        "stats_vs_duckdb": stats["warm"] / duckdb["warm"],
        "stats_rss_vs_duckdb": stats["peak_mb"] / duckdb["peak_mb"],
    }
    if "rg -F ID" in by_name:
        goals["chain_vs_rg"] = by_name["mcptrace chain (unindexed)"]["warm"] / by_name["rg -F ID"]["warm"]
    return goals


if __name__ == "__main__":
    main()
