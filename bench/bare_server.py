"""The baseline: the official SDK's server with the same `ping` and `search_database`, and nothing else.

No request ids, logs, guards or telemetry: what `mcptrace serve` is measured
against. Same SQLite database and query, same uvicorn settings, loopback only.

    python bench/bare_server.py --port 0 --data-dir DIR --ready-file FILE
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from mcptrace.server._db import Database


def build(db: Database) -> Any:
    server: MCPServer[Any] = MCPServer("bare-sdk", log_level="WARNING")

    @server.tool(description="Search the tenant's catalogue in the embedded database.")
    async def search_database(query: str, limit: int = 10) -> dict[str, Any]:
        if not 1 <= limit <= 50:
            raise ToolError("limit must be between 1 and 50")
        rows = await anyio.to_thread.run_sync(db.search, "acme", query, limit)
        return {"rows": rows, "count": len(rows)}

    @server.tool(description="Answer 'pong'.")
    async def ping() -> str:
        return "pong"

    return server.streamable_http_app(host="127.0.0.1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    app = build(Database(args.data_dir / "mcptrace.sqlite3"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    original = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original(sockets=sockets)
        args.ready_file.write_text(url)

    server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
