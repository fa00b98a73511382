"""One packet per answer: the writes of one event-loop step reach the socket as one `send`.

uvicorn writes a response's head, each body part and the end of a chunked body
separately, and each write is a system call that wakes the client (and, on a
busy machine, a context switch): three to five per JSON-RPC answer. Here the
writes made during one step of the loop are kept and sent together when the
step ends (or at once when the response is complete, the connection closes, or
more than `FLUSH_BYTES` are waiting, so back-pressure still reaches the app).
An SSE event that arrives later in its own step still leaves at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Past this many waiting bytes the writes go out at once (the transport's own flow control takes over).
FLUSH_BYTES = 64 * 1024


class CoalescingTransport(asyncio.Transport):
    """A socket transport whose writes within one loop step leave as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._waiting: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._waiting:
            self._loop.call_soon(self.flush)
        self._waiting.append(bytes(data))
        self._size += len(data)
        if self._size > FLUSH_BYTES:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what is waiting to the socket now."""
        if self._waiting:
            waiting = self._waiting
            self._waiting, self._size = [], 0
            if not self._transport.is_closing():
                self._transport.write(waiting[0] if len(waiting) == 1 else b"".join(waiting))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._waiting, self._size = [], 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
