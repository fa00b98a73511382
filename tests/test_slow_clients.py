"""A client that never finishes its request head or body is cut off (408), without touching anyone else.

The server runs with `MCPTRACE_HEADER_TIMEOUT=1`: a request head must arrive whole
within a second of the connection opening (or of its first byte, on a kept-alive
connection). Bodies have a deadline of their own, `MCPTRACE_BODY_TIMEOUT=5`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from mcptrace.testing import RunningProcess, running_server
from tests.abuse import http_request, raw_exchange
from tests.helpers import UNLIMITED, eventually, read_log

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 5.0
PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    env = {"MCPTRACE_HEADER_TIMEOUT": str(HEAD_TIMEOUT), "MCPTRACE_BODY_TIMEOUT": str(BODY_TIMEOUT),
           "MCPTRACE_STATELESS": "1"}
    with running_server(tmp_path_factory.mktemp("slow-clients"), *UNLIMITED, env=env) as proc:
        yield proc


def connect(server: RunningProcess) -> socket.socket:
    port = int(server.base_url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def read_all(sock: socket.socket) -> bytes:
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received.extend(chunk)
    except ConnectionResetError:
        pass
    return bytes(received)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and a Content-Length body) from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


HEAD_LATE = "the request headers did not arrive in time"


def rejections(server: RunningProcess, error: str = HEAD_LATE) -> list[dict[str, object]]:
    return [r for r in read_log(server.log_file) if r.get("http_status") == 408 and r.get("error") == error]


def test_a_head_dribbled_past_the_deadline_gets_408_and_the_connection_closes(server: RunningProcess) -> None:
    before = len(rejections(server))
    request = http_request(server, PING)
    with connect(server) as sock:
        opened = time.monotonic()
        for byte in request[:40]:  # a byte every 0.1 s: 4 s for these alone, far past the deadline
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        reply = read_all(sock)
        waited = time.monotonic() - opened
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert waited < HEAD_TIMEOUT + 4

    def logged_once() -> list[dict[str, object]]:
        logged = rejections(server)
        assert len(logged) == before + 1
        return logged

    logged = eventually(logged_once, timeout=5)
    assert logged[-1]["event"] == "request_rejected" and str(logged[-1]["mcp_request_id"]).startswith("req-")


def test_a_connection_that_never_sends_anything_is_closed_quietly(server: RunningProcess) -> None:
    with connect(server) as sock:
        opened = time.monotonic()
        reply = read_all(sock)
        waited = time.monotonic() - opened
    assert reply == b""
    assert HEAD_TIMEOUT * 0.8 <= waited < HEAD_TIMEOUT + 4


def test_a_slow_but_timely_head_is_served(server: RunningProcess) -> None:
    request = http_request(server, PING)
    pause = HEAD_TIMEOUT / 4 / len(request)  # the whole head in about a quarter of the deadline
    reply = raw_exchange(server, [request[i : i + 1] for i in range(len(request))], between=pause)
    assert reply.status == 200 and b'"result"' in reply.body


def test_a_slow_body_is_not_head_time(server: RunningProcess) -> None:
    request = http_request(server, PING)
    head, body = request[: -len(PING)], request[-len(PING) :]
    reply = raw_exchange(server, [head, body[:10], body[10:]], between=HEAD_TIMEOUT * 1.5)
    assert reply.status == 200 and b'"result"' in reply.body


def test_each_request_on_a_kept_alive_connection_gets_its_own_deadline(server: RunningProcess) -> None:
    keep_alive = http_request(server, PING).replace(b"Connection: close", b"Connection: keep-alive")
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(keep_alive)
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(HEAD_TIMEOUT * 1.5)  # idle between requests: uvicorn's keep-alive, not the head deadline


def test_a_body_that_stalls_past_its_deadline_gets_408_and_the_connection_closes(server: RunningProcess) -> None:
    stalled = "the request body did not arrive in time"
    before = len(rejections(server, stalled))
    request = http_request(server, PING, framing=[b"Content-Length: 1000"])  # 1000 promised, far fewer sent
    with connect(server) as sock:
        opened = time.monotonic()
        sock.sendall(request)
        reply = read_all(sock)
        waited = time.monotonic() - opened
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b'"code":-32600' in reply.replace(b" ", b"") and b"connection: close" in reply.lower()
    assert BODY_TIMEOUT * 0.8 <= waited < BODY_TIMEOUT + 5

    def logged_once() -> None:
        assert len(rejections(server, stalled)) == before + 1

    eventually(logged_once, timeout=5)
