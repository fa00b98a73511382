"""Child `python -m mcptrace ...` processes: started on free loopback ports, always stopped.

Shared by the test helpers (`mcptrace.testing`) and `mcptrace demo`. A child
announces its URL through a ready file once it accepts requests; every wait is
bounded, and leaving the `running()` block (normally, on an error or on
Ctrl-C) stops the child with SIGTERM, then SIGKILL if it does not go. Children
run in their own session, so a terminal's Ctrl-C reaches only the parent,
which then stops them in order instead of having them die mid-start.
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
from typing import Any

import mcptrace
from mcptrace._errors import ProcessStartError

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
    args: Sequence[str],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
    stop_timeout: float = 15.0,
    trailing: Sequence[str] = (),
) -> Iterator[RunningProcess]:
    """Run `python -m mcptrace ARGS --ready-file ... TRAILING` and yield once it accepts requests.

    `trailing` comes last, after the ready file: `("--", "node", "server.js")` for `mcptrace proxy`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"ready-{time.monotonic_ns()}"
    stderr_path = workdir / f"stderr-{ready.name}.txt"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcptrace", *args, "--ready-file", str(ready), *trailing],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=subprocess_env(env),
            cwd=workdir,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise ProcessStartError(f"mcptrace {args[0]} exited {proc.returncode}: {_tail(stderr_path)}")
            if time.monotonic() > deadline:
                raise ProcessStartError(f"mcptrace {args[0]} not ready in {timeout:g}s: {_tail(stderr_path)}")
            time.sleep(0.05)
        yield RunningProcess(ready.read_text().strip(), proc, workdir, stderr_path)
    finally:
        stop_process(proc, timeout=stop_timeout)


def stop_process(proc: subprocess.Popen[Any], *, timeout: float = 15.0) -> None:
    """SIGTERM, a bounded wait for a graceful exit, then SIGKILL: no child outlives its test."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(path: Path, lines: int = 15) -> str:
    """The end of a child's stderr, and where the rest is."""
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join([*text[-lines:], f"(full stderr: {path})"])
