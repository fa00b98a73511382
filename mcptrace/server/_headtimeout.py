"""Bounds on the request head: it must arrive in time and be of a sane size, or the connection is cut off.

uvicorn times a connection out only while it idles between requests, and any
byte it receives cancels that timer, so a client that opens a connection and
then sends its headers a byte at a time ("slowloris") holds a connection and a
parser forever when no proxy sits in front. Here every connection must deliver
a complete request head within `seconds` of opening or of the previous
response; otherwise it gets `408 Request Timeout` and is closed. Requests whose
head has arrived are never affected: slow bodies and long SSE streams are the
app's business.

Once a head is parsed, the connection stops reading until the app asks for the
body: a request the guards refuse from its headers never has more of its body
in memory than arrived with its head (uvicorn would otherwise buffer up to
64 KiB of it per connection).

A head (request line and headers) larger than `max_head_bytes` (16 KiB, about
what nginx accepts) gets `431 Request Header Fields Too Large` with a JSON-RPC
error and its `X-Request-ID`, whether it arrived whole or is still arriving;
what the client still sends is read and discarded for a moment before the
connection closes, so the answer is not lost to a reset.

When the parser meets bytes it cannot read while the app is answering the
request (a bad chunk in a body the app refused without reading), there is one
answer only: the parser's 400, or the app's when it started first; the other
goes nowhere, as an answer to a client that left does, instead of raising.

This builds on uvicorn's httptools protocol class (llhttp, in C: about a third
of the CPU of h11 per request) and its `cycle` and `flow` attributes; the
uvicorn version is pinned below its next minor release in `pyproject.toml`, and
`tests/test_slow_clients.py`, `tests/test_abuse_http.py` and `tests/test_edges.py`
exercise every path.
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mcptrace import _fields as f
from mcptrace.middleware._ids import new_request_id
from mcptrace.server._coalesce import CoalescingTransport

#: What the protocol logs when it cuts a connection off (the server turns it into a log line).
HEAD_TIMEOUT_MESSAGE = "Request head not received in time."
HEAD_TOO_LARGE_MESSAGE = "Request head too large."
#: Seconds what follows a refused head is read and discarded before the connection closes.
LINGER_SECONDS = 1.0

_BODY = b"request headers did not arrive in time\r\n"
_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n"
    b"\r\n" % len(_BODY)
) + _BODY


def head_too_large_response(request_id: str, limit: int) -> bytes:
    body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {
        "code": -32600, "message": f"Request Header Fields Too Large: the request head exceeds {limit} bytes"}})
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"connection: close\r\n"
        + f"{f.REQUEST_ID_HEADER}: {request_id}\r\n".encode()
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def head_deadline_protocol(seconds: float, *, max_head_bytes: int = 16 * 1024) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with a deadline of `seconds` for each request head and a size bound on it.

    The clock starts when a connection opens, and again when the first byte of a
    later request arrives (an idle keep-alive connection stays uvicorn's business).
    """
    class HeadDeadlineProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _discarding = False
        _awaiting_head = True  # the next bytes belong to a request head
        _head_seen = 0  # bytes of the head being received (counted from the chunk it starts in)
        _tail = b""  # the last bytes of that head so far, for an end (CRLF CRLF) split across chunks
        _heads = 0  # request heads parsed on this connection
        transport: CoalescingTransport

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, self.loop))
            self._arm()

        def on_response_complete(self) -> None:
            self.transport.flush()  # the answer is whole: it leaves now, not when the step ends
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return
            arm = False
            if self._awaiting_head:
                if self._head_too_large(data):
                    return
                arm = self._head_timer is None and self._between_requests()
            before, heads = self.cycle, self._heads
            super().data_received(data)
            # A head that arrived whole in this chunk needs no clock; one still incomplete gets it now.
            if arm and self._awaiting_head and self._heads == heads and not self.transport.is_closing():
                self._arm()
            cycle = self.cycle
            if cycle is not before and cycle is not None and cycle.more_body:
                self.flow.pause_reading()  # the body is read when the app asks for it, not before the guards judged

        def on_headers_complete(self) -> None:
            self._awaiting_head, self._head_seen, self._tail = False, 0, b""
            self._heads += 1
            self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._awaiting_head = True
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            cycle = self.cycle
            if cycle is not None and cycle.response_started and cycle.more_body:
                self.transport.close()  # the app answered this request already: nothing more can be said
            else:
                super().send_400_response(msg)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # what the app still sends goes nowhere, as for a client that left
                cycle.message_event.set()

        def _head_too_large(self, data: bytes) -> bool:
            seen = self._head_seen + len(data)
            if seen <= max_head_bytes:
                self._head_seen = seen
                self._tail = (self._tail + data)[-3:]
                return False
            end = (self._tail + data).find(b"\r\n\r\n")
            if end != -1 and self._head_seen - len(self._tail) + end + 4 <= max_head_bytes:
                return False
            request_id = new_request_id()
            self.logger.warning(HEAD_TOO_LARGE_MESSAGE, extra={"mcptrace_request_id": request_id})
            self._disarm()
            self._discarding = True
            self.transport.write(head_too_large_response(request_id, max_head_bytes))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
            return True

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
            if self.transport.is_closing() or not self._between_requests() or not self._awaiting_head:
                return
            if self._head_seen:  # part of a head arrived: say why the request ends
                self.logger.warning(HEAD_TIMEOUT_MESSAGE)
                self.transport.write(_RESPONSE)
            self.transport.close()

    return HeadDeadlineProtocol
