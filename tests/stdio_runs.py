"""Run `mcptrace serve --stdio` many times, cheaply: imports paid once, each run a forked process.

    python tests/stdio_runs.py WORKDIR RUNS PARALLEL

Each run reads `WORKDIR/run-N/stdin` (a script of requests ending in EOF) and
writes `WORKDIR/run-N/stdout` and its log under `WORKDIR/run-N/`. The parent
imports the server's modules, then forks every run from itself, at most
PARALLEL at a time; a child runs the real command line (`mcptrace.cli.main`)
and leaves through the interpreter's normal exit, as `python -m mcptrace` does.
Prints one JSON object: each run's exit status. Every run is killed after 60 s.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import mcptrace.cli
import mcptrace.server._run  # noqa: F401 - imported once here, before the forks

mcptrace.cli.build_parser()  # and every command module with it

RUN_TIMEOUT = 60.0


def child(workdir: Path) -> int:
    stdin = os.open(workdir / "stdin", os.O_RDONLY)
    stdout = os.open(workdir / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stderr = os.open(workdir / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    return mcptrace.cli.main(["serve", "--stdio", "--data-dir", str(workdir)])


def main() -> int:
    workdir, runs, parallel = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    assert threading.active_count() == 1, "forking is only safe before any thread starts"
    statuses: dict[int, int] = {}
    running: dict[int, tuple[int, float]] = {}
    for n in range(runs):
        while len(running) >= parallel:
            _reap(running, statuses)
        pid = os.fork()
        if pid == 0:
            sys.exit(child(workdir / f"run-{n}"))  # the child's normal exit: stdio flushed, atexit run
        running[pid] = (n, time.monotonic())
    while running:
        _reap(running, statuses)
    print(json.dumps({str(n): status for n, status in sorted(statuses.items())}))
    return 0


def _reap(running: dict[int, tuple[int, float]], statuses: dict[int, int]) -> None:
    for pid, (n, started) in list(running.items()):
        if time.monotonic() - started > RUN_TIMEOUT:
            os.kill(pid, signal.SIGKILL)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            statuses[n] = os.waitstatus_to_exitcode(status)
            del running[pid]
    time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
