"""Servers written elsewhere that `mcptrace proxy` is tested in front of, and how to reach them.

npm's `@modelcontextprotocol/server-everything` and the TypeScript SDK client live in
tests/node (installed by scripts/test.sh, pinned in its package-lock.json); PyPI's
`mcp-server-time` comes with the test extra.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mcp import StdioServerParameters

from mcptrace.testing import stop_process, subprocess_env
from tests.otel_receivers import free_port

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
EVERYTHING = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
TS_CLIENT = NODE_DIR / "client.mjs"
FAULTY = ROOT / "tests" / "proxy_faulty_server.py"


def node() -> str:
    """Node 22 from the conformance install when there, else the machine's node; skips without either."""
    bundled = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "node"
    found = str(bundled) if bundled.exists() else shutil.which("node")
    if found is None or not EVERYTHING.exists():
        pytest.skip("the npm test servers are not installed: run scripts/test.sh (needs npm)")
    return found


def everything_command(transport: str = "stdio") -> list[str]:
    return [node(), str(EVERYTHING), transport]


def proxy_params(
    workdir: Path, command: list[str], *args: str, env: dict[str, str] | None = None,
) -> StdioServerParameters:
    """How an MCP client starts `mcptrace proxy -- COMMAND` (what a client's mcp.json says)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcptrace", "proxy", "--data-dir", str(workdir), *args, "--", *command],
        env=subprocess_env(env), cwd=str(workdir),
    )


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:g} s")


@contextmanager
def everything_http(workdir: Path) -> Iterator[str]:
    """server-everything over Streamable HTTP on a free port; yields its MCP endpoint on 127.0.0.1.

    It listens on every interface (its own choice, no option to change it); the tests reach it on
    loopback only.
    """
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "everything-stderr.txt", "wb") as err:
        process = subprocess.Popen(
            everything_command("streamableHttp"), stdout=subprocess.DEVNULL, stderr=err, cwd=workdir,
            env={**os.environ, "PORT": str(port)}, start_new_session=True,
        )
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(process, timeout=5)
