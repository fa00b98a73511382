"""The guards judge a request from its headers: a refused request never has its body read.

Raw sockets: a client declares a 1 MiB body and sends only its head, then waits
for the answer. A refusal that needed the body could not arrive; one that does
proves the body was not waited for.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcptrace.guards._tokens import TokenStore
from mcptrace.testing import RunningProcess, initialize_message, running_server
from tests.helpers import wait_for_log

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    store = TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")
    return store.path, {name: store.add(name, tenant="acme") for name in ("flooder", "a", "b", "c", "d")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tokens: tuple[Path, dict[str, str]]) -> Iterator[RunningProcess]:
    """Two requests' worth of body budget in total, one per principal; a low limit that suspends quickly."""
    env = {"MCPTRACE_BODY_BUDGET_BYTES": str(2 * MIB), "MCPTRACE_BODY_BUDGET_PER_CALLER": str(MIB)}
    args = ("--tokens", str(tokens[0]), "--rate-limit-caller", "3/3", "--suspend-after", "2",
            "--suspend-seconds", "60")
    with running_server(tmp_path_factory.mktemp("heads"), *args, env=env) as proc:
        yield proc


def head(server: RunningProcess, token: str | None, *, length: int = MIB) -> bytes:
    host = server.base_url.removeprefix("http://")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            f"{auth}Content-Length: {length}\r\n\r\n").encode()


def port(server: RunningProcess) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and `Content-Length` body) from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    length = next(int(v) for k, _, v in (line.partition(b":") for line in top.split(b"\r\n")[1:])
                  if k.strip().lower() == b"content-length")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return top + b"\r\n\r\n" + body


def answer_to_head_only(server: RunningProcess, token: str | None) -> tuple[bytes, bool]:
    """Send a head promising 1 MiB and nothing more; the answer, and whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port(server)), timeout=10) as sock:
        sock.sendall(head(server, token))
        reply = read_response(sock)
        sock.settimeout(1)
        try:
            closed = sock.recv(65536) == b""
        except TimeoutError:
            closed = False
    return reply, closed


INIT = json.dumps(initialize_message("uploader")).encode()


def call(server: RunningProcess, token: str, body: bytes = b'{"jsonrpc":"2.0","id":1,"method":"ping"}') -> bytes:
    """A whole small request, body and all."""
    with socket.create_connection(("127.0.0.1", port(server)), timeout=10) as sock:
        sock.sendall(head(server, token, length=len(body)) + body)
        return read_response(sock)


def test_no_token_gets_401_at_once_and_a_closed_connection_without_its_body_being_read(
    server: RunningProcess,
) -> None:
    reply, closed = answer_to_head_only(server, None)
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 401 Unauthorized"
    lowered = rest.lower()
    assert b"www-authenticate: bearer " in lowered and b"connection: close" in lowered
    assert b'"code":-32001' in reply and b"x-request-id: req-" in lowered
    assert closed, "the connection is closed after the answer"


def test_a_suspended_caller_is_refused_before_its_body(
    server: RunningProcess, tokens: tuple[Path, dict[str, str]]
) -> None:
    flooder = tokens[1]["flooder"]
    statuses = [call(server, flooder).split(b" ", 2)[1] for _ in range(8)]
    assert statuses[-1] == b"429", statuses
    reply, closed = answer_to_head_only(server, flooder)  # 1 MiB promised, none sent: refused all the same
    assert reply.startswith(b"HTTP/1.1 429 ") and b'"scope":"suspended"' in reply, reply[:300]
    assert b"retry-after: " in reply.lower()
    [line] = wait_for_log(server.log_file, lambda r: r.get("refusal_reason") == "suspended"
                          and r.get("caller_id") == "flooder")[:1]
    assert line["http_status"] == 429 and line["status"] == "refused"


def _answer_parts(reply: bytes) -> tuple[bytes, set[bytes], dict[str, object]]:
    top, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = top.split(b"\r\n")
    names = {line.partition(b":")[0].strip().lower() for line in lines} - {b"date", b"server"}
    return status, names, json.loads(body)


def test_a_suspended_token_gets_the_same_answer_from_the_outermost_layer_as_from_admission(
    server: RunningProcess, tokens: tuple[Path, dict[str, str]]
) -> None:
    """The first refusal as suspended comes from admission, which remembers the token; the next ones are
    answered before any other layer runs: same status, headers and JSON-RPC error, same refusal lines,
    and nobody else is affected."""
    d = tokens[1]["d"]
    replies = [call(server, d) for _ in range(8)]
    suspended = [r for r in replies if b'"scope":"suspended"' in r]
    assert len(suspended) >= 2, [r[:12] for r in replies]
    (first_status, first_names, first), (status, names, later) = (_answer_parts(r) for r in suspended[:2])
    assert first_status == status == b"HTTP/1.1 429 Too Many Requests"
    assert first_names == names == {b"content-type", b"content-length", b"retry-after", b"x-request-id"}
    for answer in (first, later):
        assert answer["id"] is None and answer["error"]["code"] == -32000  # type: ignore[index]
        assert answer["error"]["message"] == "Rate limit exceeded"  # type: ignore[index]
        assert answer["error"]["data"]["scope"] == "suspended"  # type: ignore[index]
        assert 0 < answer["error"]["data"]["retryAfterMs"] <= 60_000  # type: ignore[index]
    assert call(server, tokens[1]["b"], INIT).startswith(b"HTTP/1.1 200")  # another caller is served
    lines = wait_for_log(server.log_file, lambda r: r.get("refusal_reason") == "suspended"
                         and r.get("caller_id") == "d")
    assert all(r["http_status"] == 429 and r["principal"] for r in lines)


def test_the_body_budget_answers_503_with_retry_after_past_it(
    server: RunningProcess, tokens: tuple[Path, dict[str, str]]
) -> None:
    """1 MiB in flight per principal, 2 MiB in all: a third upload waits for one to finish."""
    a, b, c = (tokens[1][n] for n in ("a", "b", "c"))
    held = [socket.create_connection(("127.0.0.1", port(server)), timeout=10) for _ in range(2)]
    try:
        for sock, token in zip(held, (a, b), strict=True):
            sock.sendall(head(server, token) + b" " * 1000)  # the body starts, slowly
        deadline = time.monotonic() + 10
        while True:
            same_caller, _ = answer_to_head_only(server, a)
            if same_caller.startswith(b"HTTP/1.1 503") or time.monotonic() > deadline:
                break  # until both uploads hold their share (the server reads them as they come)
            time.sleep(0.05)
        anyone, _ = answer_to_head_only(server, c)
        for reply in (same_caller, anyone):
            assert reply.startswith(b"HTTP/1.1 503 "), reply[:200]
            assert b"retry-after: 1" in reply.lower() and b'"code":-32000' in reply and b"retryAfterMs" in reply
    finally:
        for sock in held:
            sock.close()
    lines = wait_for_log(server.log_file, lambda r: r.get("refusal_reason") == "overloaded", count=2)
    assert {r["limit_scope"] for r in lines} == {"caller", "server"}

    deadline = time.monotonic() + 10  # the closed uploads give their budget back as the server sees them go
    while not (reply := call(server, c, INIT)).startswith(b"HTTP/1.1 200") and time.monotonic() < deadline:
        time.sleep(0.4)  # within c's own rate limit (3/s): asking again must not get it limited
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


@pytest.mark.slow
def test_three_hundred_slow_unauthenticated_uploads_cost_less_than_40_mb(server: RunningProcess) -> None:
    """Each declares 1 MiB and sends 32 KiB every 100 ms until answered: all get 401, RSS barely moves.

    Reading the bodies before the token costs +305 MB here; refusing first, +10 MB on a quiet machine
    and up to +23 MB on a busy one (more of the uploads' chunks arrive before the answers go out)."""
    host = server.base_url.removeprefix("http://")

    async def upload() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port(server))
        writer.write(head(server, None))
        answer = b""
        for _ in range(32):
            try:
                answer = await asyncio.wait_for(reader.read(64), timeout=0.1)
                break
            except TimeoutError:
                writer.write(b" " * 32 * 1024)
                await writer.drain()
        writer.close()
        return answer

    async def attack() -> list[bytes]:
        return await asyncio.gather(*(upload() for _ in range(300)))

    pid = server.process.pid
    before, peak, done = rss_mb(pid), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        answers = asyncio.run(attack())
    finally:
        done.set()
        sampler.join()
    assert host and all(a.startswith(b"HTTP/1.1 401") for a in answers)
    assert peak[0] - before <= 40, f"RSS {before:.1f} -> {peak[0]:.1f} MB"


def test_a_tool_named_in_the_headers_that_the_token_does_not_allow_is_refused_before_the_body(
    tmp_path: Path,
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    pinger = store.add("pinger", tenant="acme", tools=["ping"])
    with running_server(tmp_path / "server", "--tokens", str(store.path)) as srv, \
            socket.create_connection(("127.0.0.1", port(srv)), timeout=10) as sock:
        host = srv.base_url.removeprefix("http://")
        sock.sendall((f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      f"Accept: application/json\r\nAuthorization: Bearer {pinger}\r\n"
                      "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: run_report\r\n"
                      f"Content-Length: {MIB}\r\n\r\n").encode())
        reply = read_response(sock)
    assert reply.startswith(b"HTTP/1.1 403 ") and b'"code":-32003' in reply, reply[:300]
