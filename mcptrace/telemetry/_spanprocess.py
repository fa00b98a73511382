"""`ProcessSpanExporter`: spans encoded and sent over OTLP by a child process, off the server's GIL.

The OTLP exporters build their protobuf messages in Python, and while they do,
requests wait for the interpreter lock. This exporter only turns each batch
into plain tuples (`_spanwire`: request records, or spans read through their
public properties) and writes it, pickled, to the stdin of
`python -m mcptrace.telemetry._spanchild` (see there), which builds the spans
and runs the SDK's OTLP exporter with the same `OTEL_*` variables.

What the caller can rely on:

- `export()` never raises. It blocks only while the pipe is full (the batch
  thread then waits, and the batch processor's bounded queue drops and counts).
- Every span is either acknowledged by the child or counted in `drops` as
  `traces/export_failed`: batches the child failed to deliver (it reports them on
  its stdout, read by a daemon thread), batches written to a child that then
  died, and batches that arrive while no child runs. Batches this call could
  not hand over return `FAILURE`, which `CountingSpanExporter` counts.
- A child that dies is replaced on a later export, after a backoff that
  doubles (0.2 s up to 30 s) while children keep dying young.
- `shutdown()` closes the pipe; the child exports what it has read and exits,
  or is killed after `shutdown_timeout`. A child whose server dies sees the end
  of its stdin and exits by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mcptrace._process import subprocess_env
from mcptrace.telemetry._drops import DropCounter
from mcptrace.telemetry._spanwire import Batch, Item, add_items, frame, span_row, spans_in

CHILD_MODULE = "mcptrace.telemetry._spanchild"
MIN_BACKOFF = 0.2
MAX_BACKOFF = 30.0
#: A child that ran this long before dying was not failing at start: the next one starts after MIN_BACKOFF.
STABLE_AFTER = 30.0

_log = logging.getLogger(__name__)


class _Child:
    """One child process, what was written to it and what it acknowledged."""

    def __init__(self, process: subprocess.Popen[bytes], drops: DropCounter) -> None:
        self.process = process
        self.drops = drops
        self.started = time.monotonic()
        self.sent = 0
        self.acked = 0
        self.lost = 0
        #: The resources this child was sent, by `id()` (see `_spanwire.Batch`).
        self.resources: dict[int, tuple[int, Resource]] = {}
        self._write_lock = threading.Lock()
        self._progress = threading.Condition()
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read_acks, name="mcptrace-span-acks", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return not self._done.is_set() and self.process.poll() is None

    def send(self, data: bytes, spans: int) -> bool:
        """Write one frame; False (nothing counted as sent) if the child is gone."""
        with self._write_lock:
            stdin = self.process.stdin
            if self._done.is_set() or stdin is None:
                return False
            try:
                stdin.write(data)
                stdin.flush()
            except (OSError, ValueError):
                # Part of a frame may be in the pipe: end the input, so this child stops and is replaced.
                with contextlib.suppress(OSError, ValueError):
                    stdin.close()
                return False
            self.sent += spans
            return True

    def _read_acks(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for line in _lines(stdout):
            try:
                delivered, failed = (int(n) for n in line.split())
            except ValueError:
                continue
            if failed:
                self.drops.add("traces", "export_failed", failed)
            with self._progress:
                self.acked += delivered + failed
                self._progress.notify_all()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        with self._write_lock:  # no frame is half-counted while the loss is taken
            self._done.set()
            self.lost = max(0, self.sent - self.acked)
        if self.lost:
            self.drops.add("traces", "export_failed", self.lost)
        with self._progress:
            self._progress.notify_all()

    def wait_acked(self, timeout: float) -> bool:
        """Whether everything sent so far was acknowledged within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.acked < self.sent and not self._done.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
            return self.acked >= self.sent

    def close(self, timeout: float) -> None:
        """End of input: the child exports what it read and exits; killed if it takes over `timeout`."""
        deadline = time.monotonic() + timeout
        if self._write_lock.acquire(timeout=timeout):
            try:
                if self.process.stdin is not None:
                    with contextlib.suppress(OSError, ValueError):
                        self.process.stdin.close()
            finally:
                self._write_lock.release()
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log.warning("span export child %d did not finish in %gs; killed", self.process.pid, timeout)
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)


def _lines(stream: IO[bytes]) -> Any:
    with contextlib.suppress(OSError, ValueError):
        yield from stream


class ProcessSpanExporter(SpanExporter):
    """A `SpanExporter` whose OTLP encoding and sending run in a child process (see the module docstring).

    `protocol` is `http/protobuf` or `grpc`; `env` holds extra variables for the
    child (the rest of its environment is this process's). The child starts
    with the exporter, and again in a forked copy of the process at its first export.
    """

    def __init__(
        self,
        *,
        protocol: str = "http/protobuf",
        drops: DropCounter | None = None,
        env: Mapping[str, str] | None = None,
        shutdown_timeout: float = 4.0,
    ) -> None:
        self.drops = drops if drops is not None else DropCounter()
        self._starts = 0
        self._protocol = protocol
        self._env = dict(env or {})
        self._shutdown_timeout = shutdown_timeout
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._backoff = MIN_BACKOFF
        self._restart_at = 0.0
        self._closed = False
        self._pid = os.getpid()
        with self._lock:
            self._running_child()  # started now, so its imports are done before the first batch

    @property
    def restarts(self) -> int:
        """Children started to replace one that died."""
        return max(0, self._starts - 1)

    @property
    def child_pid(self) -> int | None:
        """The running child's process id (None while none runs)."""
        child = self._child
        return child.process.pid if child is not None and child.alive else None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        with self._lock:
            child = self._running_child()
        if child is None:
            return SpanExportResult.FAILURE
        batch = Batch(child.resources)
        for span in spans:
            row = span_row(span, batch)
            if row is not None:
                batch.rows.append(row)
        if not child.send(frame(batch.message()), len(batch.rows)):
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def export_items(self, items: Sequence[Item], resource: Resource) -> None:
        """Send request records (their spans carry `resource`) and other spans; what is not sent is counted."""
        child = None
        if not self._closed:
            with self._lock:
                child = self._running_child()
        if child is None:
            self.drops.add("traces", "export_failed", spans_in(items))
            return
        batch = Batch(child.resources)
        n = add_items(batch, items, resource)
        if not child.send(frame(batch.message()), n):
            self.drops.add("traces", "export_failed", n)

    def _running_child(self) -> _Child | None:
        child = self._child
        if self._pid != os.getpid():
            # A forked copy of the server: the child and its pipe belong to the parent; start our own.
            if child is not None:
                for pipe in (child.process.stdin, child.process.stdout):
                    if pipe is not None:
                        with contextlib.suppress(OSError, ValueError):
                            pipe.close()
            self._pid, self._child, child = os.getpid(), None, None
            self._starts, self._restart_at, self._backoff = 0, 0.0, MIN_BACKOFF
        if child is not None and child.alive:
            return child
        now = time.monotonic()
        if child is not None:
            lived = now - child.started
            if lived >= STABLE_AFTER:
                self._backoff = MIN_BACKOFF
            self._restart_at = now + self._backoff
            _log.warning("span export child %d exited (code %s) after %.1fs; a new one starts in %.1fs",
                         child.process.pid, child.process.poll(), lived, self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            self._child = None
        if now < self._restart_at:
            return None
        try:
            child = self._start()
        except OSError as exc:
            self._restart_at = now + self._backoff
            _log.warning("span export child could not start (%s); retrying in %.1fs", exc, self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            return None
        self._child = child
        return child

    def _start(self) -> _Child:
        process = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE, "--protocol", self._protocol],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=subprocess_env(self._env),
            start_new_session=True,  # a terminal's Ctrl-C is for the server, which then closes the pipe
        )
        self._starts += 1
        return _Child(process, self.drops)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        child = self._child
        return child is None or child.wait_acked(timeout_millis / 1000)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            child.close(self._shutdown_timeout)
