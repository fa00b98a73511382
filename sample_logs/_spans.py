"""Spans of the sample run: an OTLP receiver that keeps them, and a flat JSON-lines form to store them in."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any


class SpanTap:
    """An OTLP/HTTP receiver (oteltap) on 127.0.0.1 that keeps every span the server exports.

    oteltap's API is asyncio-only, so it runs on its own thread and event loop.
    """

    def __init__(self) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.spans: list[Any] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        settings = OtelTapHttpProtobufReceiverSettings(http_port=self.port)
        async with OtelTapHttpProtobufReceiver(settings) as receiver:

            async def drain() -> None:
                async for span in receiver.stream_traces():
                    self.spans.append(span)

            task = asyncio.create_task(drain())
            await asyncio.sleep(0)
            self._ready.set()
            await self._stop.wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def __enter__(self) -> SpanTap:
        self._thread.start()
        if not self._ready.wait(20):
            raise TimeoutError("the OTLP receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


def span_rows(spans: list[Any]) -> list[dict[str, Any]]:
    """OTLP spans as flat JSON rows: ids in W3C hex, times in UTC, attributes as a plain map."""
    kinds = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
    rows = []
    for span in spans:
        attributes = {}
        for kv in span.attributes:
            which = kv.value.WhichOneof("value")
            attributes[kv.key] = getattr(kv.value, which) if which else None
        rows.append({
            "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
            "parent_span_id": span.parent_span_id.hex() or None, "name": span.name,
            "kind": kinds.get(span.kind, "unspecified"),
            "start": _iso(span.start_time_unix_nano), "end": _iso(span.end_time_unix_nano),
            "duration_ms": round((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6, 3),
            "status": {0: "unset", 1: "ok", 2: "error"}.get(span.status.code, "unset"),
            "attributes": attributes,
        })
    rows.sort(key=lambda r: (r["start"], r["span_id"]))
    return rows


def _iso(unix_nano: int) -> str:
    stamp = datetime.fromtimestamp(unix_nano / 1e9, UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")
