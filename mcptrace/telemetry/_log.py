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
_bound: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("mcptrace_log_fields", default={})


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
    rotations: int = 0
    last_error: str | None = None


class LogSink:
    """Append-only line sink: a file with size-based rotation, and/or stderr.

    Lines are whole when they reach the file: rotation happens between lines,
    under the same lock as writes, so a rotated set loses and tears nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        stderr: bool = False,
        max_bytes: int = 100 * 1024 * 1024,
        backup_count: int = 10,
        flush_interval: float = 0.2,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.stats = SinkStats()
        self._stderr: IO[bytes] | None = sys.stderr.buffer if stderr else None
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0
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
            self._file = open(self.path, "ab", buffering=256 * 1024)  # noqa: SIM115
            self._size = self._file.tell()
        except OSError as exc:
            self._file = None
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
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
            if self._file is None:
                self._open()
                if self._file is None:
                    self.stats.lines_dropped += 1
                    return
            try:
                self._file.write(line)
            except OSError as exc:
                self._recover(exc)
                self.stats.lines_dropped += 1
                return
            self._size += len(line)
            self.stats.lines_written += 1
            if self._size >= self.max_bytes:
                self._rotate()

    def _recover(self, exc: OSError) -> None:
        """Drop what the buffer holds that cannot be written, keep the file usable."""
        self._fail(exc)
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as close_exc:
                if close_exc.errno not in (errno.EFBIG, errno.ENOSPC):
                    pass

    def _rotate(self) -> None:
        assert self.path is not None and self._file is not None
        try:
            self._file.close()
            for i in range(self.backup_count - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self.stats.rotations += 1
        except OSError as exc:
            self._fail(exc)
        self._file = None
        self._open()

    def flush(self) -> None:
        with self._lock:
            for stream in (self._file, self._stderr):
                if stream is None:
                    continue
                try:
                    stream.flush()
                except OSError as exc:
                    if stream is self._file:
                        self._recover(exc)
                except ValueError:
                    pass

    def writable(self) -> bool:
        """Whether the last attempt to write reached the file (for /health)."""
        if self.path is None:
            return True
        self.flush()
        if self._file is not None and self.stats.last_error is None:
            return True
        return self._probe()

    def _probe(self) -> bool:
        assert self.path is not None
        try:
            with open(self.path, "ab") as fh:
                fh.flush()
            self.stats.last_error = None
            return True
        except OSError:
            return False

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
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None


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
