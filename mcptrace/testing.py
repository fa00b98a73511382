"""Helpers for testing against a real `mcptrace serve` (shipped so users can test their deployments too).

`running_server()` starts the real server in a subprocess on a free loopback
port and stops it with SIGTERM; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mcptrace

_PACKAGE_ROOT = str(Path(mcptrace.__file__).resolve().parent.parent)


@dataclass
class RunningProcess:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    stderr_path: Path

    @property
    def base_url(self) -> str:
        return self.url.removesuffix("/mcp")

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "mcptrace.log"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child `python -m mcptrace`: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


@contextmanager
def running(
    args: Sequence[str], workdir: Path, *, env: dict[str, str] | None = None, timeout: float = 20.0,
    stop_timeout: float = 15.0,
) -> Iterator[RunningProcess]:
    """Run `python -m mcptrace ARGS --ready-file ...` and yield once it accepts requests."""
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"ready-{time.monotonic_ns()}"
    stderr_path = workdir / f"stderr-{ready.name}.txt"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcptrace", *args, "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL, stderr=err, env=subprocess_env(env), cwd=workdir,
        )
    deadline = time.monotonic() + timeout
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"mcptrace {' '.join(args)} exited {proc.returncode}: {stderr_path.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mcptrace {' '.join(args)} not ready in {timeout}s: {stderr_path.read_text()}")
            time.sleep(0.05)
        yield RunningProcess(ready.read_text().strip(), proc, workdir, stderr_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def running_server(workdir: Path, *extra_args: str, env: dict[str, str] | None = None) -> Iterator[RunningProcess]:
    """The real `mcptrace serve` on 127.0.0.1 and a free port, data and logs under `workdir`."""
    with running(["serve", "--port", "0", "--data-dir", str(workdir), *extra_args], workdir, env=env) as proc:
        yield proc


@contextmanager
def running_upstream(workdir: Path, *extra_args: str) -> Iterator[RunningProcess]:
    """The demo upstream API on 127.0.0.1 and a free port."""
    with running(["upstream", "--port", "0", *extra_args], workdir) as proc:
        yield proc
