"""A user's own `MCPServer` with `mcptrace.instrument()` and a JSON log file, served in a subprocess.

    python -m tests.user_server LOG_FILE READY_FILE

The server is the SDK's Streamable HTTP app under uvicorn on a free loopback
port (SSE responses, sessions, both protocol eras), with mcptrace's request log
writing to LOG_FILE through `mcptrace.LogSink`, as a user would set it up.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcptrace.testing import stop_process, subprocess_env


def serve(log_path: str, ready: str) -> None:
    from mcp.server import MCPServer

    import mcptrace

    server: MCPServer[Any] = MCPServer("inventory")

    @server.tool()
    async def stock(item: str) -> dict[str, Any]:
        async with mcptrace.downstream("warehouse", f"GET /stock/{item}"):
            count = len(item) * 7
        return {"item": item, "count": count}

    mcptrace.instrument(server, logger=mcptrace.EventLogger(mcptrace.LogSink(log_path)))
    serve_announced(server.streamable_http_app(), ready)


def serve_announced(app: Any, ready: str) -> None:
    """Serve `app` under uvicorn on a free loopback port; its MCP URL is written to `ready` once it serves."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    original = uv.startup

    async def startup(sockets: Any = None) -> None:
        await original(sockets=sockets)
        Path(ready + ".tmp").write_text(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")
        Path(ready + ".tmp").replace(ready)

    uv.startup = startup  # type: ignore[method-assign]
    uv.run(sockets=[sock])


@contextmanager
def running_user_server(workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """(url, process, log file) of the instrumented user server; stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    log, ready = workdir / "user.log", workdir / f"ready-{time.monotonic_ns()}"
    with open(workdir / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.user_server", str(log), str(ready)],
                                env=subprocess_env(), cwd=Path(__file__).resolve().parent.parent, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, (workdir / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "the instrumented server did not start"
            time.sleep(0.05)
        yield ready.read_text(), proc, log
    finally:
        stop_process(proc)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
