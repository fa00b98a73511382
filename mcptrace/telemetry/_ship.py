"""Shipping each rotated log file to the fleet dataset, off the request path.

Queue. When the log file is about to rotate (`_logfile.LogFile`, under the
sink's lock) `LogShipper.add` makes one hard link to it in `.mcptrace-ship/`
beside the log, named after the log and the moment
(`mcptrace.log.20261205T142233123456Z`); nothing else happens on the writing
thread. The link is the queue: it survives a crash or a restart, it keeps the
file's lines after the rotation has deleted its oldest backup, and it is removed
only once the file is shipped (the dataset names a file by its first line, so the
queue's name for it matters only here).

Worker. A thread takes the entries oldest first and ships each in a child
process (`python -m mcptrace index ENTRY --dest URL`) at a lower CPU priority:
parsing JSON and writing Parquet never hold the server's interpreter lock, and
they yield the CPU to requests. A success removes the entry and writes
`log_shipped`; a failure writes `log_ship_failed` (the file and destination in
`message`, the `error`, and `retry_after_ms` until the next try) and the queue
waits `retry` seconds, doubling on each failure in a row up to `retry_max`. The
entries behind it wait too, so files arrive in order.
Entries an earlier run left (a crash, a stop during a shipment) are shipped when
the server starts again; shipping is idempotent, so a file shipped twice reads
once.

An entry that is still the live file (the process stopped between the link and
the rename, or the rename was refused) waits until the file really rotates, and
is never linked twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcptrace import _fields as f
from mcptrace._process import stop_process, subprocess_env
from mcptrace.telemetry._log import EventLogger
from mcptrace.telemetry._logfile import describe
from mcptrace.telemetry._logline import utc_timestamp

#: The queue's folder, beside the log file.
QUEUE_DIR = ".mcptrace-ship"
#: Seconds one shipment may take before its child is stopped and the shipment counts as failed.
SHIP_TIMEOUT = 600.0
#: How often the worker looks at the queue when nothing woke it (an entry waiting for its rename).
POLL_SECONDS = 1.0
#: How much lower than the server's the child's CPU priority is (`nice`).
NICENESS = 10
_ERROR_CHARS = 300


class LogShipper:
    """Ships the rotated files of the log at `log_path` to `dest`, one child process at a time."""

    def __init__(
        self, logger: EventLogger, log_path: Path, dest: str, *, replica: str | None = None,
        retry: float = 5.0, retry_max: float = 300.0, env: Mapping[str, str] | None = None,
    ) -> None:
        self.logger = logger
        self.live = log_path
        self.queue = log_path.parent / QUEUE_DIR
        self.dest = dest
        self.replica = replica
        self.retry = retry
        self.retry_max = max(retry, retry_max)
        self.env = dict(env) if env is not None else None
        #: Files shipped and shipments failed since the start (for /health and tests).
        self.shipped = 0
        self.failed = 0
        self._last_error: str | None = None  # of the last attempt, None once one succeeds
        self._last_shipped: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._unqueued: list[tuple[str, str]] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker; entries an earlier run left are its first work."""
        self.queue.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, daemon=True, name="mcptrace-log-ship")
        self._thread.start()

    def add(self, path: Path) -> None:
        """Queue the file at `path`, about to be rotated: one hard link, never an exception (the sink's lock
        is held, and a request may be waiting on it)."""
        try:
            st = os.stat(path)
            self.queue.mkdir(parents=True, exist_ok=True)
            for entry in self.queue.iterdir():
                try:
                    other = os.stat(entry)
                except OSError:
                    continue
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    return  # queued already, by a rotation that was refused or cut short
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            os.link(path, self.queue / f"{path.name}.{stamp}")
        except OSError as exc:
            with self._lock:
                self._unqueued.append((path.name, describe(exc)))
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker; a shipment under way is stopped and stays queued for the next start."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            child = self._child
        if child is not None:
            stop_process(child, timeout=timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def health(self) -> dict[str, Any]:
        """`/health`'s `log_shipping` check: degraded from a failed shipment until the next one succeeds."""
        state: dict[str, Any] = {"queued": len(self.pending()), "shipped": self.shipped, "failed": self.failed,
                                 "last_shipped": self._last_shipped}
        error = self._last_error
        if error is not None:
            return {"status": "degraded", "error": error, **state}
        return {"status": "healthy", **state}

    def pending(self) -> list[Path]:
        """Queued entries, oldest first."""
        try:
            return sorted(p for p in self.queue.iterdir() if p.is_file())
        except OSError:
            return []

    def _next(self) -> Path | None:
        """The oldest entry that has really rotated (is no longer the live file)."""
        try:
            live = os.stat(self.live)
            live_id: tuple[int, int] | None = (live.st_dev, live.st_ino)
        except OSError:
            live_id = None
        for entry in self.pending():
            try:
                st = os.stat(entry)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != live_id:
                return entry
        return None

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            self._report_unqueued()
            self._wake.clear()
            entry = self._next()
            if entry is None:
                self._wake.wait(POLL_SECONDS)
                continue
            started = time.monotonic()
            error = self._ship(entry)
            if self._stop.is_set():
                return  # stopped mid-shipment: the entry stays for the next start, and says nothing
            if error is None:
                self.shipped += 1
                self._last_error = None
                self._last_shipped = utc_timestamp()
                delay = 0.0
                try:
                    entry.unlink()
                except OSError:
                    pass
                shipped: dict[str, Any] = {
                    f.MESSAGE: f"{entry.name} shipped to {self.dest}",
                    f.DURATION_MS: round((time.monotonic() - started) * 1000, 3),
                }
                self.logger.emit(f.EV_LOG_SHIPPED, **shipped)
                continue
            self.failed += 1
            self._last_error = error
            delay = self.retry if delay == 0 else min(delay * 2, self.retry_max)
            failed: dict[str, Any] = {
                f.MESSAGE: f"{entry.name} not shipped to {self.dest}", f.ERROR: error,
                f.RETRY_AFTER_MS: round(delay * 1000),
            }
            self.logger.emit(f.EV_LOG_SHIP_FAILED, "warning", **failed)
            self._stop.wait(delay)

    def _report_unqueued(self) -> None:
        with self._lock:
            unqueued, self._unqueued = self._unqueued, []
        for name, error in unqueued:
            self.failed += 1
            self._last_error = f"{name} could not be queued: {error}"
            fields: dict[str, Any] = {
                f.MESSAGE: f"{name} not shipped to {self.dest}",
                f.ERROR: f"could not be queued ({error}); ship it with `mcptrace index FILE --dest URL`",
            }
            self.logger.emit(f.EV_LOG_SHIP_FAILED, "warning", **fields)

    def _ship(self, entry: Path) -> str | None:
        """Run one shipment in a child process: None when it succeeded, else why it did not."""
        command = [sys.executable, "-m", "mcptrace", "index", str(entry), "--dest", self.dest]
        if self.replica:
            command += ["--replica", self.replica]
        with self._lock:
            if self._stop.is_set():
                return "stopped"
            try:
                child = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    env=subprocess_env(self.env), start_new_session=True,
                )
            except OSError as exc:
                return f"could not start the shipment: {describe(exc)}"
            self._child = child
        try:
            os.setpriority(os.PRIO_PROCESS, child.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS))
        except OSError:
            pass
        try:
            _, err = child.communicate(timeout=SHIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_process(child)
            return f"the shipment took longer than {SHIP_TIMEOUT:g}s and was stopped"
        finally:
            with self._lock:
                self._child = None
        if child.returncode == 0:
            return None
        return _last_words(err.decode(errors="replace")) or f"the shipment exited {child.returncode}"


def _last_words(stderr: str) -> str:
    """The error a failed `mcptrace index` printed last, without its `mcptrace: error:` prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[-1].removeprefix("mcptrace: ").removeprefix("error: ")
    return text[:_ERROR_CHARS]
