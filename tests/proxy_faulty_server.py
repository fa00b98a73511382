"""A stdio MCP server (the official SDK's) that misbehaves on request, for the proxy's fault tests.

Each tool is one failure a real server has: it dies, it hangs, it answers slowly, it prints to stdout
what is not protocol, it answers with a message far larger than any limit.
"""

from __future__ import annotations

import os

import anyio
from mcp.server import MCPServer

server = MCPServer("faulty", log_level="WARNING")
#: The protocol's pipe, kept before the SDK's stdio transport moves stray writes on fd 1 to stderr:
#: what a server without that protection (most of them, in any language) does with a print().
STDOUT = os.dup(1)


@server.tool()
def echo(message: str) -> str:
    return message


@server.tool()
def crash(status: int = 3) -> str:
    os._exit(status)


@server.tool()
async def hang() -> str:
    await anyio.sleep_forever()
    return "never"


@server.tool()
async def slow(seconds: float) -> str:
    await anyio.sleep(seconds)
    return f"after {seconds} s"


@server.tool()
def noise(text: str = "Starting the server... done") -> str:
    os.write(STDOUT, text.encode() + b"\n")
    return "said something on stdout"


@server.tool()
def huge(size: int) -> str:
    return "x" * size


if __name__ == "__main__":
    server.run("stdio")
