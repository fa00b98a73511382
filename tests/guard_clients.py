"""Clients for guarded servers: the official SDK client with a bearer token, and raw JSON-RPC posts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jsonschema  # noqa: F401  (the SDK client imports it lazily on its first call; slow enough to skew timings)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import Implementation

from mcptrace.testing import initialize_message, subprocess_env


def add_token(store: Path, caller: str, tenant: str, *tools: str) -> str:
    """`mcptrace token add` through the real CLI; the token is the last line it prints."""
    args = [
        sys.executable,
        "-m",
        "mcptrace",
        "token",
        "add",
        caller,
        "--tenant",
        tenant,
        "--store",
        str(store),
    ]
    for tool in tools:
        args += ["--tool", tool]
    out = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), timeout=30, check=True)
    return out.stdout.strip().splitlines()[-1]


def revoke(store: Path, caller: str, *extra: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "mcptrace", "token", "revoke", caller, "--store", str(store), *extra],
        capture_output=True,
        env=subprocess_env(),
        timeout=30,
        check=True,
    )


@asynccontextmanager
async def client(
    url: str, token: str | None, *, mode: str = "legacy", name: str = "guarded"
) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, client_info=Implementation(name=name, version="1")) as c:
            yield c


INIT = initialize_message("raw")


class RawSession:
    """A legacy Streamable HTTP session spoken by hand, for counting status codes under load."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url = http, url
        self.headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
        self.next_id = 1

    async def open(self) -> RawSession:
        r = await self.http.post(self.url, json=INIT, headers=self.headers)
        r.raise_for_status()
        self.headers |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers
        )
        return self

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> httpx.Response:
        self.next_id += 1
        body = {
            "jsonrpc": "2.0",
            "id": self.next_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments or {}},
        }
        return await self.http.post(self.url, json=body, headers=self.headers)
