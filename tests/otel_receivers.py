"""Real OTLP receivers for the tests: oteltap (OTLP/HTTP) and a gRPC trace service.

Both keep everything they received and let a test wait, bounded, for an item
matching a predicate. oteltap's own API is asyncio-only and hands items only to
listeners that exist when they arrive, so it runs on its own thread and loop,
collecting from the moment it starts.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from tests.helpers import read_log

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Collected(Generic[T]):
    """Items received so far; `wait_for` blocks (bounded) until one matches."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._cond = threading.Condition()

    def add(self, item: T) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[T], bool], timeout: float = 15.0) -> T:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for item in self.items[seen:]:
                    if predicate(item):
                        return item
                seen = len(self.items)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"nothing matching arrived within {timeout}s ({seen} items received)")
                self._cond.wait(remaining)

    def matching(self, predicate: Callable[[T], bool]) -> list[T]:
        with self._cond:
            return [item for item in self.items if predicate(item)]


class OtelTap:
    """oteltap on 127.0.0.1: OTLP/HTTP traces, metrics and logs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.spans: Collected[Any] = Collected()
        self.metrics: Collected[Any] = Collected()
        self.logs: Collected[Any] = Collected()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="oteltap", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        settings = OtelTapHttpProtobufReceiverSettings(http_port=self.port)
        async with OtelTapHttpProtobufReceiver(settings) as receiver:
            streams = [(receiver.stream_traces(), self.spans), (receiver.stream_metrics(), self.metrics),
                       (receiver.stream_logs(), self.logs)]
            tasks = [asyncio.create_task(self._drain(stream, sink)) for stream, sink in streams]
            await asyncio.sleep(0)  # let each stream subscribe before anyone can send
            self._ready.set()
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _drain(stream: Any, sink: Collected[Any]) -> None:
        async for item in stream:
            sink.add(item)

    def start(self) -> OtelTap:
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError("oteltap did not start")
        if self._error is not None:
            raise RuntimeError(f"oteltap failed to start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@contextmanager
def oteltap() -> Iterator[OtelTap]:
    tap = OtelTap(free_port()).start()
    try:
        yield tap
    finally:
        tap.stop()


@contextmanager
def grpc_trace_receiver() -> Iterator[tuple[str, Collected[Any]]]:
    """An OTLP/gRPC trace service (grpcio + the official OTLP protos) on 127.0.0.1."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    spans: Collected[Any] = Collected()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the proto's name)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.add(span)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", spans
    finally:
        server.stop(grace=1).wait(5)


def wait_for_log_line(
    path: Any, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10,
) -> list[Any]:
    """All records of a JSON log once one matches. The sink flushes on a 0.2 s timer, so a file
    has nothing to await: re-read it until the line is there, within `timeout`."""

    deadline = time.monotonic() + timeout
    while True:
        records = read_log(path) if path.exists() else []
        if any(predicate(r) for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"no matching line in {path.name} within {timeout}s")
        time.sleep(0.05)


# -- reading OTLP protobufs ----------------------------------------------------

def attrs(item: Any) -> dict[str, Any]:
    """A span's, log record's or data point's attributes as a plain dict."""
    out: dict[str, Any] = {}
    for kv in item.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind else None
    return out


def hex_id(raw: bytes) -> str:
    return raw.hex()


def points(metric: Any) -> list[Any]:
    """The data points of a Sum, Gauge or Histogram metric."""
    kind = metric.WhichOneof("data")
    return list(getattr(metric, kind).data_points) if kind else []
