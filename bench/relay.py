"""The floor for an HTTP proxy in Python: a relay that forwards each request and streams its answer back.

No request ids, guards, logs, spans or metrics, no parsing of the body: aiohttp's
server in front, aiohttp's pooled client behind (C parsers both ways), every
chunk of the answer written as it arrives, so SSE stays streamed. What
`mcptrace proxy --target` is measured against besides the server itself: the
part of the added latency any Python hop pays on this machine.

    python bench/relay.py TARGET_URL READY_FILE
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping

import aiohttp
from aiohttp import web

#: Headers that belong to one connection, not to the request or answer being relayed.
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def _end_to_end(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


async def relay(target: str, ready: str) -> None:
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with client.request(request.method, target, data=body, headers=_end_to_end(request.headers)) as up:
            answer = web.StreamResponse(status=up.status, headers=_end_to_end(up.headers))
            await answer.prepare(request)
            async for chunk in up.content.iter_any():
                await answer.write(chunk)
            await answer.write_eof()
            return answer

    app = web.Application()
    app.router.add_route("*", "/mcp", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with open(ready + ".tmp", "w") as out:
        out.write(f"http://127.0.0.1:{port}/mcp")
    os.replace(ready + ".tmp", ready)
    try:
        await asyncio.Event().wait()
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(relay(sys.argv[1], sys.argv[2]))
