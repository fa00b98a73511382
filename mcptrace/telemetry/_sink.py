"""The log sink: when lines reach the operating system, and what the log says when some could not.

Durability. Lines are gathered in memory and handed to the kernel in one `write`
per batch (`_logfile`), at the latest when a response is about to leave:
`commit()` is called by the request log before it returns a result to the SDK
and by the HTTP layer before a response's first and last bytes. Once `write`
has returned the lines belong to the kernel, so `kill -9` of the server loses
no line of a request whose answer left it. A power loss can still take what the
kernel had not yet put on disk: there is no `fsync`. Lines no response waits on
(a request still running, start-up, a probe) go out when the next response
does, or within `flush_interval` seconds from a background thread. Grouping the
lines of every request answered meanwhile into one `write` keeps the cost to
about one system call per response, and less under concurrency.

Gaps. Telemetry never fails a request: a line that cannot be written (a full
disk, a file made unwritable or removed, a rotation that could not reopen the
file) is dropped and counted. The next write to that target starts with a
`log_gap` line saying how many lines were dropped, between which instants and
why, so the log itself records its holes; the background thread retries within
`flush_interval`, so the gap is written as soon as the target accepts bytes
again, with or without traffic. `SinkStats` keeps the same counts for
`/health` and the `mcptrace_telemetry_dropped_total{signal="logs"}` metric:
`lines_dropped` is the sum of the `dropped_lines` of every `log_gap` line written,
plus the gap still open.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mcptrace import _fields as f
from mcptrace._schema import LOG_SCHEMA_VERSION
from mcptrace.telemetry._logfile import LogFile, LogStream, Outcome
from mcptrace.telemetry._logline import encode_line, utc_timestamp

#: Why a removed log file counts as a gap: its lines went with it.
REMOVED_FILE_ERROR = "ENOENT: the log file was removed while open; its last lines went with it"
#: Distinct causes named in one `log_gap` line at most.
_MAX_GAP_ERRORS = 3


@dataclass
class SinkStats:
    """What one target did with the lines given to it. `lines_written` counts the logger's lines only."""

    lines_written: int = 0
    lines_dropped: int = 0
    #: Dropped lines of which a part stayed in the file (could not be cut back).
    lines_torn: int = 0
    #: `log_gap` lines written.
    gaps: int = 0
    rotations: int = 0
    last_error: str | None = None


class _Target(Protocol):
    last_error: str | None

    def write(self, lines: list[bytes]) -> Outcome: ...


@dataclass
class _Gap:
    """Lines dropped since the last line that reached a target."""

    lines: int = 0
    start: float = 0.0
    end: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, lines: int, error: str, start: float, end: float) -> None:
        if not self.lines:
            self.start = start
        self.lines += lines
        self.end = max(self.end, end)
        if error not in self.errors and len(self.errors) < _MAX_GAP_ERRORS:
            self.errors.append(error)

    def line(self, now: float) -> bytes:
        return encode_line({
            f.TIMESTAMP: utc_timestamp(now), f.LEVEL: "warning", f.EVENT: f.EV_LOG_GAP, f.REQUEST_ID: None,
            f.DROPPED_LINES: self.lines, f.GAP_START: utc_timestamp(self.start), f.GAP_END: utc_timestamp(self.end),
            f.ERROR: "; ".join(self.errors), f.SCHEMA_VERSION: LOG_SCHEMA_VERSION,
        })


class _Output:
    """One target with its own gap and counts: the file and stderr fail independently."""

    def __init__(self, target: _Target, name: str, stats: SinkStats) -> None:
        self.target = target
        self.name = name
        self.stats = stats
        self.gap = _Gap()
        self.failing = False
        self._warned = False

    def open(self) -> None:
        """Open the target now, so one that cannot be opened shows in /health before any line is lost."""
        outcome = self.target.write([])
        if outcome.error is not None:
            now = time.time()
            self.lost(0, outcome.error, now, now)

    def deliver(self, lines: list[bytes]) -> None:
        if not lines and not self.gap.lines and not self.failing:
            return
        batch = lines
        if self.gap.lines:
            gap_line = self.gap.line(time.time())
            batch = [gap_line, *lines]
        outcome = self.target.write(batch)
        landed = outcome.written
        if batch is not lines and landed:
            landed -= 1
            self.stats.gaps += 1
            self.gap = _Gap()
        self.stats.lines_written += landed
        self.stats.lines_torn += outcome.torn
        if isinstance(self.target, LogFile):
            self.stats.rotations = self.target.rotations
        self.stats.last_error = self.target.last_error
        if outcome.error is None:
            self.failing = False
            return
        now = time.time()
        self.lost(len(lines) - landed, outcome.error, now, now)

    def lost(self, lines: int, error: str, start: float, end: float) -> None:
        """Count lines that will never be read here, and keep them in the gap the next write reports."""
        self.failing = True
        self.stats.last_error = error
        if lines:
            self.stats.lines_dropped += lines
            self.gap.add(lines, error, start, end)
        if not self._warned:
            self._warned = True
            try:
                print(f"mcptrace: log {self.name} failed ({error}); dropped lines are counted and the log "
                      "will say so (log_gap) once it can be written again", file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass


class LogSink:
    """Append-only JSON lines to a file with size-based rotation, and/or to stderr.

    `write_before_response=False` trades the kill -9 guarantee for fewer system
    calls: `commit()` then does nothing and lines go out every `flush_interval`
    seconds or when `buffer_bytes` are pending (what the instrumentation bench
    compares). Thread-safe; writing never raises into a request.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        stderr: bool = False,
        max_bytes: int = 100 * 1024 * 1024,
        backup_count: int = 10,
        flush_interval: float = 0.2,
        buffer_bytes: int = 256 * 1024,
        write_before_response: bool = True,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.buffer_bytes = buffer_bytes
        self.write_before_response = write_before_response
        #: Counts of the log file (of stderr when there is no file): the record `/health` reports.
        self.stats = SinkStats()
        #: The state of whatever ships the rotated files (`serve --ship`), as `/health` shows it.
        self.shipping: Callable[[], dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._closed = False
        self._file: LogFile | None = None
        self._outputs: list[_Output] = []
        self._ticks: list[Callable[[], None]] = []
        self._closers: list[Callable[[], None]] = []
        if self.path is not None:
            # A file over RLIMIT_FSIZE must fail with EFBIG, not kill the process.
            if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            self._file = LogFile(self.path, max_bytes=max_bytes, backup_count=backup_count)
            self._outputs.append(_Output(self._file, f"file {self.path}", self.stats))
        if stderr:
            stats = SinkStats() if self._outputs else self.stats
            self._outputs.append(_Output(LogStream(2), "stream stderr", stats))
        with self._lock:
            for output in self._outputs:
                output.open()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self._outputs:
            self._flusher = threading.Thread(target=self._flush_loop, args=(flush_interval,), daemon=True,
                                             name="mcptrace-log-flush")
            self._flusher.start()

    def write(self, line: bytes) -> None:
        """Queue one complete line (ending in a newline); it reaches the OS at the next commit at the latest."""
        with self._lock:
            if not self._outputs:
                self.stats.lines_written += 1
                return
            self._pending.append(line)
            self._pending_bytes += len(line)
            if self._pending_bytes >= self.buffer_bytes or self._closed:
                self._drain()

    def commit(self) -> None:
        """Hand every pending line to the OS now: called just before a response leaves the server."""
        if not self.write_before_response:
            return
        with self._lock:
            if self._pending:
                self._drain()

    def flush(self) -> None:
        """Hand every pending line to the OS now, and write any gap the targets can take again."""
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        """Lock held."""
        lines, self._pending, self._pending_bytes = self._pending, [], 0
        for output in self._outputs:
            output.deliver(lines)

    def _check_file(self) -> None:
        """Lock held. A log file removed while open is reopened, and its last lines counted as a gap."""
        if self._file is None:
            return
        lost, since = self._file.check_removed()
        if lost:
            output = self._outputs[0]
            self.stats.lines_written -= lost
            output.lost(lost, REMOVED_FILE_ERROR, since, time.time())

    def writable(self) -> bool:
        """Whether the last lines reached the log file (for /health); retries a failing file first."""
        if self.path is None:
            return True
        with self._lock:
            self._check_file()
            self._drain()
            return not self._outputs[0].failing

    def stderr_stats(self) -> SinkStats | None:
        """Counts of the stderr copy when there is also a file (else they are `stats`)."""
        if len(self._outputs) == 2:
            return self._outputs[1].stats
        return None

    def dropped(self) -> dict[tuple[str, str], int]:
        """Lines dropped so far as `mcptrace_telemetry_dropped_total` counts them: (signal, reason) -> lines."""
        counts: dict[tuple[str, str], int] = {}
        for output in self._outputs:
            if output.stats.lines_dropped:
                reason = "file_write_failed" if output.target is self._file else "stderr_write_failed"
                counts[("logs", reason)] = output.stats.lines_dropped
        return counts

    def on_tick(self, hook: Callable[[], None]) -> None:
        """Call `hook` from the background thread every `flush_interval`, before the pending lines go out."""
        self._ticks.append(hook)

    def on_rotate(self, hook: Callable[[Path], None]) -> None:
        """Call `hook` with the log file, closed and whole, just before each rotation renames it (under the
        lock: the hook must be quick and must not write to this sink)."""
        if self._file is not None:
            self._file.before_rotate = hook

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call `hook` once the sink is closed (a shipper stops with the log it ships)."""
        self._closers.append(hook)

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for hook in self._ticks:
                try:
                    hook()
                except Exception:  # a hook must never stop the writer
                    pass
            with self._lock:
                self._check_file()
                self._drain()

    def close(self) -> None:
        """Write what is pending and close the file; lines emitted afterwards are written at once."""
        if self._closed:
            return
        self._stop.set()
        with self._lock:
            self._closed = True
            self._check_file()
            self._drain()
            if self._file is not None:
                self._file.close()
        for hook in self._closers:
            try:
                hook()
            except Exception:
                pass
