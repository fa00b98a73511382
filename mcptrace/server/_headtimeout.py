"""A deadline for the request head: a client that never finishes its headers is cut off.

uvicorn times a connection out only while it idles between requests, and any
byte it receives cancels that timer, so a client that opens a connection and
then sends its headers a byte at a time ("slowloris") holds a connection and a
parser forever when no proxy sits in front. Here every connection must deliver
a complete request head within `seconds` of opening or of the previous
response; otherwise it gets `408 Request Timeout` and is closed. Requests whose
head has arrived are never affected: slow bodies and long SSE streams are the
app's business.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

#: What the protocol logs when it cuts a connection off (the server turns it into a log line).
HEAD_TIMEOUT_MESSAGE = "Request head not received in time."

_BODY = b"request headers did not arrive in time\r\n"
_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n"
    b"\r\n" % len(_BODY)
) + _BODY


def head_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, with a deadline of `seconds` for each request head.

    The clock starts when a connection opens, and again when the first byte of a
    later request arrives (an idle keep-alive connection stays uvicorn's business).
    """

    class HeadDeadlineProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._head_timer is None and self._between_requests():
                self._arm()
            super().data_received(data)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request head was parsed: its cycle has started
                self._disarm()

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._between_requests():
                return
            pending, _ = self.conn.trailing_data
            if pending:  # part of a head arrived: say why the request ends
                self.logger.warning(HEAD_TIMEOUT_MESSAGE)
                self.transport.write(_RESPONSE)
            self.transport.close()

    return HeadDeadlineProtocol
