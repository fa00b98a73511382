"""What every abusive request must leave true: checked on the reply, in the log and by the next client.

Shared by the abuse suites. A reply is fine when it is not a 5xx, names no
file of the server (no traceback, no path of the checkout, the interpreter or
the data directory) and, when it is an error in JSON, is a JSON-RPC error.
The log is checked afterwards in one pass: each refused request has exactly
one closing line (`request_rejected`, or `response_sent` / `tool_call` for JSON-RPC errors
the SDK middleware saw), at warning level, and no line carries a traceback.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import mcptrace
from mcptrace.testing import RunningProcess, initialize_message
from tests.helpers import read_log

INIT = initialize_message("abuse")
JSON = "application/json"
CLOSING_EVENTS = ("request_rejected", "response_sent", "tool_call")
JSONRPC_CODES = {-32700, -32600, -32601, -32602}


def leak_markers(server: RunningProcess) -> list[str]:
    """Text that must never reach a client: it would tell an attacker how the server is laid out."""
    return [
        "Traceback",
        'File "',
        "site-packages",
        str(Path(mcptrace.__file__).resolve().parent.parent),
        sys.prefix,
        str(server.workdir),
        tempfile.gettempdir() + "/",
    ]


def check_reply(server: RunningProcess, status: int, text: str, content_type: str | None) -> Any:
    """Assert the invariants of one reply; return its JSON body when it has one."""
    assert status < 500, (status, text[:500])
    for marker in leak_markers(server):
        assert marker not in text, (marker, text[:500])
    if not content_type or not content_type.startswith(JSON) or not text:
        return None
    body = json.loads(text)
    if status >= 400:
        assert body["jsonrpc"] == "2.0"
        assert isinstance(body["error"]["code"], int) and isinstance(body["error"]["message"], str)
    return body


def failed(status: int, body: Any) -> bool:
    """Whether the reply tells the client its request did not succeed."""
    if status >= 400:
        return True
    if isinstance(body, dict):
        return "error" in body or (
            isinstance(body.get("result"), dict) and body["result"].get("isError") is True
        )
    return False


@dataclass
class Session:
    """A raw Streamable HTTP session (handshake era), for sending thousands of requests fast."""

    server: RunningProcess
    http: httpx.Client
    headers: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, server: RunningProcess) -> Session:
        session = cls(server, httpx.Client(timeout=10, headers={"accept": JSON, "content-type": JSON}))
        r = session.http.post(server.url, json=INIT)
        assert r.status_code == 200, r.text
        session.headers = {
            "mcp-session-id": r.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        note = session.http.post(
            server.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers=session.headers,
        )
        assert note.status_code == 202
        return session

    def send(self, content: bytes, *, with_session: bool = True, **headers: str) -> tuple[int, Any]:
        """POST raw bytes; check the reply; remember its request id for the log check."""
        r = self.http.post(
            self.server.url, content=content, headers={**(self.headers if with_session else {}), **headers}
        )
        body = check_reply(self.server, r.status_code, r.text, r.headers.get("content-type"))
        request_id = r.headers.get("x-request-id")
        assert request_id, "every answer carries its request id"
        if failed(r.status_code, body):
            self.refused.append(request_id)
        elif r.status_code != 202:
            self.answered.append(request_id)
        return r.status_code, body

    def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> tuple[int, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method}
        if params is not None:
            message["params"] = params
        return self.send(json.dumps(message).encode(), **kw)

    def assert_still_serving(self) -> None:
        """A normal request right after: the server carries on."""
        status, body = self.call("tools/call", {"name": "ping", "arguments": {}})
        assert status == 200 and body["result"]["content"][0]["text"] == "pong", body

    def close(self) -> None:
        self.http.close()


FLUSH_INTERVAL = 0.2


def flushed_log(server: RunningProcess) -> list[dict[str, Any]]:
    """The log as written so far: the sink flushes every 0.2 s (and `/health` flushes it unless cached)."""
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code in (200, 503)
    time.sleep(FLUSH_INTERVAL + 0.1)
    text = server.log_file.read_text()
    assert "Traceback" not in text
    return read_log(server.log_file)


def assert_logged_once(
    server: RunningProcess,
    refused: list[str],
    answered: list[str] = (),  # type: ignore[assignment]
    *,
    timeout: float = 15.0,
) -> None:
    """Each refused request: one closing line, at warning level; each answered one: one closing line."""
    wanted = set(refused) | set(answered)
    deadline = time.monotonic() + timeout
    while True:
        by_id: dict[str, list[dict[str, Any]]] = {}
        for record in flushed_log(server):
            if record.get("mcp_request_id") in wanted and record["event"] in CLOSING_EVENTS:
                by_id.setdefault(record["mcp_request_id"], []).append(record)
        if set(by_id) == wanted or time.monotonic() > deadline:
            break
        # The closing line of a refused request is written after its answer left; ask again.
    missing = wanted - set(by_id)
    assert not missing, f"{len(missing)} requests never logged, e.g. {sorted(missing)[:3]}"
    for request_id in refused:
        lines = by_id[request_id]
        assert len(lines) == 1, lines
        assert lines[0]["level"] == "warning", lines
        if lines[0]["event"] in ("response_sent", "tool_call"):
            assert lines[0]["status"] == "error", lines
    for request_id in answered:
        assert len(by_id[request_id]) == 1, by_id[request_id]


@dataclass
class RawReply:
    status: int | None
    head: bytes
    body: bytes
    closed_early: bool


def raw_exchange(
    server: RunningProcess, data: bytes | list[bytes], *, timeout: float = 10.0, between: float = 0.0
) -> RawReply:
    """Send bytes on a fresh connection (in pieces when `data` is a list) and read until the server closes.

    The request must say `Connection: close`; the client never half-closes (uvicorn takes that as a
    disconnect and drops the answer).

    The server may close before it has read everything it was sent (a header too large); then the reply
    may be lost to a reset, which counts as a refusal.
    """
    port = int(server.base_url.rsplit(":", 1)[1])
    pieces = data if isinstance(data, list) else [data]
    received = bytearray()
    closed_early = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
                if between:
                    time.sleep(between)
        except (BrokenPipeError, ConnectionResetError):
            closed_early = True
        try:
            while chunk := sock.recv(65536):
                received.extend(chunk)
        except ConnectionResetError:
            closed_early = True
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status = None
    if head.startswith(b"HTTP/1.1 "):
        status = int(head.split(b" ", 2)[1])
    return RawReply(status, head, body, closed_early)


def http_request(
    server: RunningProcess,
    body: bytes,
    *,
    method: bytes = b"POST",
    path: bytes = b"/mcp",
    headers: list[bytes] | None = None,
    framing: list[bytes] | None = None,
) -> bytes:
    """A raw HTTP/1.1 request with the headers a well-behaved client sends, plus `headers`."""
    host = server.base_url.removeprefix("http://").encode()
    lines = [
        method + b" " + path + b" HTTP/1.1",
        b"Host: " + host,
        b"Accept: application/json",
        b"Content-Type: application/json",
        b"Connection: close",
        *(headers or []),
        *(framing if framing is not None else [b"Content-Length: %d" % len(body)]),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
