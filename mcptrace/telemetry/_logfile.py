"""Where log lines land: an append-only file with size-based rotation, or a stream (stderr).

A target takes a batch of complete lines and hands it to the operating system
in one `write` (one per file when rotation splits the batch; one per
`PIPE_BUF` bytes on a stream). Every line lands whole or not at all:

- A file is opened with `O_APPEND`, so the kernel puts each write at the end
  in one piece. What it refuses part-way (a full disk, `RLIMIT_FSIZE`) is cut
  back with `ftruncate` to the last whole line, so no reader ever meets a
  fragment. Where the cut cannot be made (the file changed under us) the next
  write starts with a newline: the fragment stays one bad line that readers
  count and skip, and never spoils the next good one. The same newline closes a
  fragment found at the end of the file when it is opened.
- Rotation happens between lines: a batch is split where the file reaches
  `max_bytes`, so no line is ever split across two files.
- A stream cannot be cut back; a fragment there is closed with a newline too.
  Writes to it stay within `PIPE_BUF`, which a pipe keeps atomic even when
  other writers share it.

Targets report how many lines of a batch landed and why the rest did not; what
a loss means (a gap in the record) is the sink's business (`_sink`).
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

#: Seconds before a rotation that failed (the directory refuses renames) is tried again.
ROTATION_RETRY_SECONDS = 1.0


class Outcome(NamedTuple):
    """What became of a batch: its first `written` lines landed whole, the rest did not (`error` says why)."""

    written: int
    #: 1 when a fragment of a line was left behind and could not be cut back, else 0.
    torn: int = 0
    error: str | None = None


def describe(exc: OSError) -> str:
    """`ENOSPC: No space left on device`: the errno's name first, so logs and alerts can match on it."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{name}: {text}" if name else f"{type(exc).__name__}: {text}"


def _write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write every byte, or say how many made it and why the rest did not."""
    try:
        done = os.write(fd, data)
    except OSError as exc:
        return 0, exc
    if done == len(data):  # the usual case: one system call
        return done, None
    view = memoryview(data)
    while done < len(data):
        try:
            n = os.write(fd, view[done:])
        except OSError as exc:
            return done, exc
        if n <= 0:
            return done, OSError(errno.EIO, "the file accepted no bytes")
        done += n
    return done, None


def _whole_lines(lines: list[bytes], nbytes: int) -> tuple[int, int]:
    """How many of `lines` fit whole in their first `nbytes` bytes, and how many bytes those take."""
    count = size = 0
    for line in lines:
        if size + len(line) > nbytes:
            break
        size += len(line)
        count += 1
    return count, size


class LogFile:
    """A log file at `path`, rotated to `path.1`, `path.2`, ... when it reaches `max_bytes`.

    Not thread-safe: the sink calls it under its lock.
    """

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.rotations = 0
        #: Why the last open, write or rotation failed (kept after recovery, for `/health` and warnings).
        self.last_error: str | None = None
        self._fd: int | None = None
        self._size = 0
        self._identity: tuple[int, int] | None = None
        self._fragment = False  # the file ends inside a line: the next write starts with a newline
        self._rotate_after = 0.0
        #: Lines written since the path was last seen to lead to the open file, and when the first was.
        self._unverified = 0
        self._unverified_since = 0.0
        #: Called with `path`, closed and whole, just before it is renamed to `path.1` (the shipper queues it).
        self.before_rotate: Callable[[Path], None] | None = None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def _open(self) -> str | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            return describe(exc)
        try:
            st = os.fstat(fd)
            fragment = st.st_size > 0 and os.pread(fd, 1, st.st_size - 1) != b"\n"
        except OSError as exc:
            os.close(fd)
            return describe(exc)
        self._fd, self._size, self._fragment = fd, st.st_size, fragment
        self._identity = (st.st_dev, st.st_ino)
        self._unverified = 0
        return None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def write(self, lines: list[bytes]) -> Outcome:
        """Append `lines`, rotating between them; an empty batch only (re)opens the file."""
        written = 0
        while True:
            if self._fd is None:
                error = self._open()
                if error is not None:
                    self.last_error = error
                    return Outcome(written, error=error)
            if written == len(lines):
                return Outcome(written)
            end = self._chunk_end(lines, written)
            landed, torn, error = self._append(lines[written:end])
            written += landed
            if error is not None:
                self.last_error = error
                return Outcome(written, torn, error)
            if self._size >= self.max_bytes:
                self._rotate()

    def _chunk_end(self, lines: list[bytes], start: int) -> int:
        """Lines from `start` that go to the current file: up to `max_bytes`, at least one."""
        if time.monotonic() < self._rotate_after:  # rotation refused for now: no point cutting the batch
            return len(lines)
        end, size = start, self._size
        while end < len(lines) and (end == start or size < self.max_bytes):
            size += len(lines[end])
            end += 1
        return end

    def _append(self, chunk: list[bytes]) -> tuple[int, int, str | None]:
        """One write of whole lines: (lines landed, fragments left, error)."""
        assert self._fd is not None
        prefix = b"\n" if self._fragment else b""
        data = prefix + b"".join(chunk)
        done, exc = _write_all(self._fd, data)
        if exc is None:
            self._size += len(data)
            self._fragment = False
            if not self._unverified:
                self._unverified_since = time.time()
            self._unverified += len(chunk)
            return len(chunk), 0, None
        if done >= len(prefix):
            self._fragment = False
        landed, kept = _whole_lines(chunk, max(0, done - len(prefix)))
        kept += len(prefix) if done >= len(prefix) else 0
        torn = 0
        if done > kept and not self._cut_back(self._size + kept, self._size + done):
            self._fragment = True
            torn = 1
        self.close()  # reopened on the next write, which then sees the file as it really is
        return landed, torn, describe(exc)

    def _cut_back(self, whole: int, end: int) -> bool:
        """Truncate a torn fragment away, unless the file is no longer as this write left it."""
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size != end:
                return False
            os.ftruncate(self._fd, whole)
        except OSError:
            return False
        return True

    def _rotate(self) -> None:
        """`path` -> `path.1` -> `path.2` ...; the next write opens a new `path`."""
        if time.monotonic() < self._rotate_after:
            return  # refused a moment ago: the file grows past `max_bytes` meanwhile, losing nothing
        self.close()
        if self.before_rotate is not None:
            try:
                self.before_rotate(self.path)
            except Exception:  # shipping must never stop the log
                pass
        try:
            for i in range(self.backup_count - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            self.rotations += 1
        except OSError as exc:
            self.last_error = f"rotation failed: {describe(exc)}"
            self._rotate_after = time.monotonic() + ROTATION_RETRY_SECONDS

    def check_removed(self) -> tuple[int, float]:
        """Whether the open file was removed: (lines written to it since the last check, when the first was).

        A file renamed away (an external `logrotate`) keeps its lines and is simply
        reopened at `path`; a file unlinked while open takes its lines with it, so
        the lines written since the path last led to it are reported as lost.
        """
        unverified, since = self._unverified, self._unverified_since
        self._unverified = 0
        if self._fd is None:
            return 0, since
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                return 0, since
        except FileNotFoundError:
            pass
        except OSError:
            return 0, since
        try:
            unlinked = os.fstat(self._fd).st_nlink == 0
        except OSError:
            unlinked = False
        self.close()
        return (unverified if unlinked else 0), since


class LogStream:
    """An already-open stream such as stderr, written through its file descriptor.

    Not thread-safe: the sink calls it under its lock.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.last_error: str | None = None
        self._fragment = False

    @property
    def is_open(self) -> bool:
        return True

    def write(self, lines: list[bytes]) -> Outcome:
        written = 0
        while written < len(lines):
            end, size = written, 0
            while end < len(lines) and (end == written or size + len(lines[end]) <= select.PIPE_BUF):
                size += len(lines[end])
                end += 1
            prefix = b"\n" if self._fragment else b""
            chunk = lines[written:end]
            done, exc = _write_all(self.fd, prefix + b"".join(chunk))
            if exc is not None:
                if done >= len(prefix):
                    self._fragment = False
                landed, kept = _whole_lines(chunk, max(0, done - len(prefix)))
                torn = int(done > kept + len(prefix))
                self._fragment = self._fragment or bool(torn)
                self.last_error = describe(exc)
                return Outcome(written + landed, torn, self.last_error)
            self._fragment = False
            written = end
        return Outcome(written)
