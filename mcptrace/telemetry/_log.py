"""Structured JSON log lines, one object per line, cheap enough for the hot path.

Records are built from three layers, later ones winning: fields bound to the
current context (`bind`), fields added by processors (trace ids, ...), and the
fields passed to `emit`. A line is serialised once with orjson and appended to
a buffered sink; a background thread flushes it. Writing never raises into a
request: a sink that fails counts the line as dropped and says so on stderr
(once) and through `LogSink.stats`.
"""

from __future__ import annotations

import contextvars
import errno
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from mcptrace import _fields as f
from mcptrace._schema import LOG_SCHEMA_VERSION

Processor = Callable[[MutableMapping[str, Any]], None]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_bound: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "mcptrace_log_fields", default={}  # noqa: B039 - never mutated: bind() sets a new dict
)


def bind(**fields: Any) -> contextvars.Token[dict[str, Any]]:
    """Add fields to every line emitted from the current context (and tasks it starts)."""
    return _bound.set({**_bound.get(), **fields})


def unbind(token: contextvars.Token[dict[str, Any]]) -> None:
    _bound.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        _bound.reset(token)


def bound_fields() -> dict[str, Any]:
    return _bound.get()


_ts_cache: tuple[int, str] = (-1, "")


def utc_timestamp(now: float | None = None) -> str:
    """`2026-11-25T14:32:07.123Z`: UTC, milliseconds, `Z` (the contract's format)."""
    global _ts_cache
    t = time.time() if now is None else now
    second = int(t)
    cached_second, prefix = _ts_cache
    if cached_second != second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _ts_cache = (second, prefix)
    return f"{prefix}.{int((t - second) * 1000):03d}Z"


@dataclass
class SinkStats:
    lines_written: int = 0
    lines_dropped: int = 0
    #: Dropped lines of which a part reached the file (cut by a full disk or RLIMIT_FSIZE).
    lines_torn: int = 0
    rotations: int = 0
    last_error: str | None = None


class LogSink:
    """Append-only line sink: a file with size-based rotation, and/or stderr.

    Lines are buffered here (not in a `BufferedWriter`) so that every line is
    accounted for: when a write fails part-way, the lines before the cut count
    as written, the rest as dropped. Rotation happens between lines, under the
    same lock as writes, so a rotated set loses and tears nothing. After a
    failure the next write first ends a torn fragment with a newline, so the
    fragment stays one bad line instead of spoiling the next good one.
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
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.buffer_bytes = buffer_bytes
        self.stats = SinkStats()
        self._stderr: IO[bytes] | None = sys.stderr.buffer if stderr else None
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._size = 0
        self._failing = False
        self._warned = False
        self._closed = False
        if self.path is not None:
            # A file over RLIMIT_FSIZE must fail with EFBIG, not kill the process.
            if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, args=(flush_interval,), daemon=True)
        self._flusher.start()

    def _open(self) -> None:
        assert self.path is not None
        try:
            file = open(self.path, "a+b", buffering=0)  # noqa: SIM115
        except OSError as exc:
            self._fail(exc)
            return
        try:
            size = os.fstat(file.fileno()).st_size
            if size and os.pread(file.fileno(), 1, size - 1) != b"\n":
                _write_all(file, b"\n")  # close the fragment a failed write left behind
                size += 1
        except (OSError, _PartialWrite) as exc:
            file.close()
            self._fail(exc.error if isinstance(exc, _PartialWrite) else exc)
            return
        self._file = file
        self._size = size

    def _fail(self, exc: OSError) -> None:
        self._failing = True
        self.stats.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
        if not self._warned:
            self._warned = True
            print(f"mcptrace: log sink {self.path} failed ({self.stats.last_error}); counting dropped lines",
                  file=sys.stderr)

    def write(self, line: bytes) -> None:
        with self._lock:
            if self._stderr is not None:
                try:
                    self._stderr.write(line)
                except (OSError, ValueError):
                    pass
            if self.path is None:
                self.stats.lines_written += 1
                return
            self._pending.append(line)
            self._pending_bytes += len(line)
            if self._pending_bytes >= self.buffer_bytes:
                self._drain()

    def _drain(self) -> None:
        """Write the pending lines, rotating whenever the file reaches `max_bytes`. Lock held."""
        lines, self._pending, self._pending_bytes = self._pending, [], 0
        i = 0
        while i < len(lines):
            if self._file is None:
                self._open()
                if self._file is None:
                    self.stats.lines_dropped += len(lines) - i
                    return
            j, size = i, self._size
            while j < len(lines) and (j == i or size < self.max_bytes):
                size += len(lines[j])
                j += 1
            if not self._write_lines(lines[i:j]):
                self.stats.lines_dropped += len(lines) - j
                return
            i = j
            if self._size >= self.max_bytes:
                self._rotate()

    def _write_lines(self, lines: list[bytes]) -> bool:
        assert self._file is not None
        data = b"".join(lines)
        try:
            _write_all(self._file, data)
        except _PartialWrite as exc:
            whole = 0
            done = exc.done
            for line in lines:
                if done < len(line):
                    break
                done -= len(line)
                whole += 1
            self.stats.lines_written += whole
            self.stats.lines_dropped += len(lines) - whole
            self.stats.lines_torn += 1 if done else 0
            self._fail(exc.error)
            self._close_file()
            return False
        self._size += len(data)
        self.stats.lines_written += len(lines)
        self._failing = False
        return True

    def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass

    def _rotate(self) -> None:
        assert self.path is not None
        self._close_file()
        try:
            for i in range(self.backup_count - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self.stats.rotations += 1
        except OSError as exc:
            self._fail(exc)
        self._open()

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._drain()
            if self._stderr is not None:
                try:
                    self._stderr.flush()
                except (OSError, ValueError):
                    pass

    def writable(self) -> bool:
        """Whether the lines written so far reached the file (for /health); retries a failed file."""
        if self.path is None:
            return True
        self.flush()
        with self._lock:
            if self._failing and self._file is None:
                self._open()
            return not self._failing

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.flush()
        with self._lock:
            self._close_file()


class _PartialWrite(Exception):
    def __init__(self, done: int, error: OSError) -> None:
        self.done = done
        self.error = error


def _write_all(file: IO[bytes], data: bytes) -> None:
    """Write every byte or raise `_PartialWrite` saying how many made it."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        try:
            n = file.write(view[done:])
        except OSError as exc:
            raise _PartialWrite(done, exc) from None
        if not n:
            raise _PartialWrite(done, OSError(errno.EIO, "the file accepted no bytes"))
        done += n


class EventLogger:
    """Emits contract-shaped JSON lines to a sink."""

    def __init__(self, sink: LogSink, *, level: str = "info", processors: list[Processor] | None = None):
        self.sink = sink
        self.min_level = _LEVELS[level]
        self.processors: list[Processor] = list(processors or [])
        #: Called with each finished record after it is written (an OTLP log bridge, ...).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        if _LEVELS.get(level, 20) < self.min_level:
            return
        record: dict[str, Any] = {f.TIMESTAMP: utc_timestamp(), f.LEVEL: level, f.EVENT: event, f.REQUEST_ID: None}
        record.update(_bound.get())
        for processor in self.processors:
            try:
                processor(record)
            except Exception:  # a processor must never break the request
                pass
        record.update(fields)
        record[f.SCHEMA_VERSION] = LOG_SCHEMA_VERSION
        self.sink.write(_encode_line(record))
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                pass

    def close(self) -> None:
        self.sink.close()


def _encode_line(record: dict[str, Any]) -> bytes:
    """One JSON line, whatever the values: client-sent text may hold lone surrogates or 100-digit integers."""
    try:
        return orjson.dumps(record, default=str) + b"\n"
    except TypeError:
        return json.dumps(record, default=str, separators=(",", ":")).encode() + b"\n"


_null_logger: EventLogger | None = None


def null_logger() -> EventLogger:
    """A logger that writes nowhere (counting lines): the default when none is configured."""
    global _null_logger
    if _null_logger is None:
        _null_logger = EventLogger(LogSink(None))
    return _null_logger
