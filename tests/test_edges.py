"""Limits that hold at the edges, and no traceback for anything a client sends.

Raw sockets where an HTTP library would not send the request. Each refusal is a
JSON-RPC error with its HTTP status and its `X-Request-ID`, logged once; the
server's stderr stays free of tracebacks and "ASGI" errors throughout.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from mcptrace.testing import RunningProcess, initialize_message, running_server
from tests.abuse import raw_exchange
from tests.helpers import UNLIMITED, wait_for_log

PING = b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"ping","arguments":{}}}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    with running_server(tmp_path_factory.mktemp("edges"), *UNLIMITED) as proc:
        yield proc
    stderr = proc.stderr()
    assert "Traceback" not in stderr and "ASGI" not in stderr and "Exception" not in stderr, stderr[-3000:]


@pytest.fixture(scope="module")
def session(server: RunningProcess) -> dict[str, str]:
    headers = {"accept": "application/json"}
    r = httpx.post(server.url, json=initialize_message("edges"), headers=headers, timeout=10)
    headers |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    httpx.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers,
               timeout=10)
    return headers


def request(server: RunningProcess, *extra: bytes, body: bytes = PING, framing: bytes | None = None) -> bytes:
    host = server.base_url.removeprefix("http://").encode()
    lines = [b"POST /mcp HTTP/1.1", b"Host: " + host, b"Accept: application/json", b"Content-Type: application/json",
             b"Connection: close", *extra, framing if framing is not None else b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode()
    return None


def rejected(server: RunningProcess, request_id: str) -> dict[str, object]:
    [line] = wait_for_log(server.log_file, lambda r: r.get("mcp_request_id") == request_id)
    return line


@pytest.mark.parametrize("size", [17 * 1024, 100_000, 2_000_000], ids=["17 KiB", "100 KB", "2 MB"])
def test_request_heads_over_16_kib_get_431_with_a_jsonrpc_error(server: RunningProcess, size: int) -> None:
    reply = raw_exchange(server, request(server, b"X-Big: " + b"a" * size))
    assert reply.status == 431, reply.head[:200]
    assert json.loads(reply.body)["error"]["code"] == -32600
    request_id = header(reply.head, b"x-request-id")
    assert request_id is not None
    line = rejected(server, request_id)
    assert (line["event"], line["http_status"], line["level"]) == ("request_rejected", 431, "warning")


def test_a_head_arriving_in_pieces_is_refused_once_it_passes_16_kib(server: RunningProcess) -> None:
    whole = request(server, *[b"X-H%d: %s" % (i, b"v" * 100) for i in range(300)])
    reply = raw_exchange(server, [whole[:8000], whole[8000:16000], whole[16000:24000], whole[24000:]],
                         between=0.05)
    assert reply.status == 431 and header(reply.head, b"x-request-id")


def test_a_head_just_under_16_kib_is_served(server: RunningProcess, session: dict[str, str]) -> None:
    extra = [f"{k}: {v}".encode() for k, v in session.items() if k != "accept"]
    base = len(request(server, *extra, b"X-Pad: "))
    reply = raw_exchange(server, request(server, *extra, b"X-Pad: " + b"p" * (16 * 1024 - base - 200)))
    assert reply.status == 200 and b"pong" in reply.body


@pytest.mark.parametrize("framing", [b"Content-Length: %d" % (20 * 1024 * 1024), b"Transfer-Encoding: chunked"],
                         ids=["content-length", "chunked"])
def test_a_client_that_sends_20_mb_before_reading_gets_its_413(server: RunningProcess, framing: bytes) -> None:
    chunk = b"x" * 65536
    piece = b"%x\r\n%s\r\n" % (len(chunk), chunk) if b"chunked" in framing else chunk
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request(server, body=b"", framing=framing))
        for _ in range(320):  # 20 MiB, all of it sent before a single byte is read
            sock.sendall(piece)
        if b"chunked" in framing:
            sock.sendall(b"0\r\n\r\n")
        received = b""
        while chunk_in := sock.recv(65536):
            received += chunk_in
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head[:200]
    assert json.loads(body)["error"]["message"] == "Request body exceeds 1048576 bytes"


def test_a_bad_chunk_after_both_framings_is_refused_without_a_traceback(server: RunningProcess) -> None:
    smuggled = request(server, b"Transfer-Encoding: chunked", body=b"ZZZ\r\nnot a chunk\r\n0\r\n\r\n",
                       framing=b"Content-Length: 5")
    for _ in range(5):
        reply = raw_exchange(server, smuggled)
        assert reply.status == 400 or reply.closed_early
    time.sleep(0.3)  # the server has written whatever it was going to write to stderr
    assert "Traceback" not in server.stderr() and "ASGI" not in server.stderr()


def test_unknown_prompts_and_resources_get_32602_and_the_log_says_the_same(
    server: RunningProcess, session: dict[str, str]
) -> None:
    for method, params in (("prompts/get", {"name": "no-such-prompt"}),
                           ("resources/read", {"uri": "mcptrace://no/such/resource"})):
        r = httpx.post(server.url, json={"jsonrpc": "2.0", "id": 9, "method": method, "params": params},
                       headers=session, timeout=10)
        error = r.json()["error"]
        assert error["code"] == -32602 and "no-such-prompt" in error["message"] or "no/such" in error["message"]
        [line] = wait_for_log(server.log_file, lambda rec, m=method: rec["event"] == "response_sent"
                              and rec.get("method") == m)[-1:]
        assert line["error_code"] == -32602 and line["status"] == "error"


@pytest.mark.parametrize(("name", "value", "status"), [
    ("host", "evil.example:80", 421),
    ("origin", "http://evil.example", 403),
])
def test_host_and_origin_refusals_are_jsonrpc_errors_with_their_status(
    server: RunningProcess, session: dict[str, str], name: str, value: str, status: int
) -> None:
    r = httpx.post(server.url, content=PING, headers={**session, "content-type": "application/json", name: value},
                   timeout=10)
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32600
    line = rejected(server, r.headers["x-request-id"])
    assert (line["event"], line["http_status"], line["error_code"]) == ("request_rejected", status, -32600)


def test_each_request_gets_its_own_host_origin_and_content_type_verdict(
    server: RunningProcess, session: dict[str, str],
) -> None:
    # Verdicts are kept per header combination: whatever was judged before, each request gets its own.
    with httpx.Client(timeout=10, headers={**session, "content-type": "application/json"}) as http:

        def status(**headers: str) -> int:
            return http.post(server.url, content=PING, headers=headers).status_code

        for _ in range(3):
            assert status() == 200
            assert status(host="evil.example:80") == 421
            assert status(origin="http://evil.example") == 403
            assert status(origin="http://localhost:3000") == 200
            assert status(**{"content-type": "text/plain"}) == 400
        assert {status(host=f"evil-{i}.example:80") for i in range(300)} == {421}  # more than are kept
        assert status() == 200 and status(host="localhost:1") == 200 and status(host="localhost") == 421
