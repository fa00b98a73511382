"""Request records become spans off the request's path: a bounded queue and one thread.

The request path only appends its finished record to a deque (`put`, well
under a microsecond); other spans of the process (a user's own, httpx's...)
join the same queue through `FeedSpanProcessor`. A daemon thread takes them in
chunks and hands them to a sink: `ProcessSpanExporter.export_items` (the
default: rows pickled to the export child, which builds the spans and encodes
them) or a `ThreadExport` (the spans built here and exported on this thread). Chunks are small, so the
thread holds the interpreter lock for a short while at a time and requests do
not wait behind it.

The queue is bounded (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048): past it a record's
spans are dropped and counted as `traces/queue_full`, never waited for. The
thread wakes when a chunk is ready, and every `OTEL_BSP_SCHEDULE_DELAY` ms
otherwise; `force_flush` and `shutdown` hand over what is queued.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mcptrace.telemetry._drops import DropCounter
from mcptrace.telemetry._spanwire import Batch, Item, Rebuilder, add_items, spans_in

#: Records handed to the sink at a time: about 0.2 ms of work under the interpreter lock.
CHUNK = 64
DEFAULT_QUEUE = 2048
DEFAULT_DELAY_MS = 5000.0

#: Takes a chunk of items (records of traced requests, other spans) and exports their spans, counting
#: what it loses.
ItemSink = Callable[[Sequence[Item]], None]


class ThreadExport:
    """An `ItemSink` that builds the spans and exports them on the feed's thread (`MCPTRACE_SPAN_EXPORT=thread`)."""

    def __init__(self, exporter: SpanExporter, resource: Resource, drops: DropCounter) -> None:
        self.exporter = exporter
        self.resource = resource
        self.drops = drops
        self._resources: dict[int, tuple[int, Resource]] = {}
        self._rebuilder = Rebuilder()

    def __call__(self, items: Sequence[Item]) -> None:
        batch = Batch(self._resources)
        add_items(batch, items, self.resource)
        spans = self._rebuilder.spans(batch.message())
        try:
            delivered = self.exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception:
            delivered = False
        if not delivered:
            self.drops.add("traces", "export_failed", len(spans))

    def shutdown(self) -> None:
        self.exporter.shutdown()


class SpanFeed:
    """The queue between the request path and an `ItemSink` (see the module docstring)."""

    def __init__(
        self, sink: ItemSink, drops: DropCounter, *, max_queue: int = DEFAULT_QUEUE,
        delay_ms: float = DEFAULT_DELAY_MS, on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.drops = drops
        self.max_queue = max(1, max_queue)
        self.delay = max(0.001, delay_ms / 1000)
        self._on_shutdown = on_shutdown
        self._queue: collections.deque[Item] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one drain at a time: the thread's, a flush's
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mcptrace-span-feed", daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        """Queue a finished, sampled request's record (or a finished span); never blocks."""
        queue = self._queue
        if len(queue) >= self.max_queue or self._closed:
            self.drops.add("traces", "queue_full", spans_in((item,)))
            return
        queue.append(item)
        if len(queue) == CHUNK:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.delay)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        queue = self._queue
        with self._lock:
            while queue:
                chunk = [queue.popleft() for _ in range(min(CHUNK, len(queue)))]
                try:
                    self.sink(chunk)
                except Exception:
                    self.drops.add("traces", "export_failed", spans_in(chunk))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain()
        return True

    def shutdown(self) -> None:
        """Hand over what is queued, then stop; records put afterwards are dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(5)
        self._drain()
        if self._on_shutdown is not None:
            self._on_shutdown()


class FeedSpanProcessor(SpanProcessor):
    """Sends the spans of a tracer provider (every sampled one, when it ends) through a `SpanFeed`."""

    def __init__(self, feed: SpanFeed) -> None:
        self.feed = feed

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self.feed.put(span)

    def shutdown(self) -> None:
        self.feed.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.feed.force_flush(timeout_millis)


def feed_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """`max_queue` and `delay_ms` from the `OTEL_BSP_*` variables, as the SDK's batch processor reads them."""
    settings: dict[str, Any] = {}
    for name, key in (("OTEL_BSP_MAX_QUEUE_SIZE", "max_queue"), ("OTEL_BSP_SCHEDULE_DELAY", "delay_ms")):
        value = env.get(name, "").strip()
        try:
            number = float(value)
        except ValueError:
            continue
        if number > 0:
            settings[key] = int(number) if key == "max_queue" else number
    return settings
