"""The proxy's connections to its HTTP target: aiohttp's pool, answers handed on as `httpx2.Response`.

Every call through `mcptrace proxy --target` crosses this client, so it is the
cheapest well-kept one: aiohttp parses HTTP in C and writes a small request in
one packet, where httpx2's pure-Python stack cost about 0.4 ms of CPU per call.
The answer is wrapped as an `httpx2.Response` over aiohttp's body (public API on
both sides), so the forwarder keeps one vocabulary: `httpx2.EventSource` decodes
the SSE streams, and failures surface as httpx2's exceptions (`ConnectError`,
`ReadTimeout`, `ReadError`, ...), whichever side they happen on.

No cookie is kept (a target's `Set-Cookie` belongs to the caller it answered, and
goes back to that caller only), redirects are passed on rather than followed, and
bodies are not decompressed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx2
from multidict import CIMultiDict


class _Body(httpx2.AsyncByteStream):
    """aiohttp's response body as httpx2 reads one, its errors as httpx2's."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            raise _translated(exc) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # an answer left unread: its connection cannot be reused


def _translated(exc: BaseException) -> BaseException:
    """An aiohttp (or timeout) failure as the httpx2 exception that names the same thing."""
    if isinstance(exc, httpx2.HTTPError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(text)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return httpx2.ReadTimeout(text)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(text)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                        aiohttp.ClientResponseError)):
        return httpx2.RemoteProtocolError(text)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx2.ReadError(text)
    return exc


class TargetClient:
    """A keep-alive pool to one target; `send` answers as soon as the target's head has arrived."""

    def __init__(self, *, read_timeout: float, connect_timeout: float = 5.0, max_connections: int = 200) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        #: The request each answer names (httpx2 wants one for its error messages), one per method and URL.
        self._requests: dict[tuple[str, str], httpx2.Request] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, timeout=self._timeout,
            skip_auto_headers=("Content-Type",),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes | None = None, *,
        timeout: float | None = None,
    ) -> httpx2.Response:
        """The target's answer, its body still to be read (close it with `aclose`)."""
        assert self._session is not None, "TargetClient.start() was not awaited"
        fields = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
        try:
            if timeout is None:
                response = await self._session.request(method, url, headers=fields, data=body, allow_redirects=False)
            else:
                response = await self._session.request(method, url, headers=fields, data=body, allow_redirects=False,
                                                       timeout=aiohttp.ClientTimeout(total=timeout))
        except Exception as exc:
            raise _translated(exc) from exc
        request = self._requests.get((method, url))
        if request is None:
            request = self._requests[method, url] = httpx2.Request(method, url)
        return httpx2.Response(response.status, headers=list(response.raw_headers), stream=_Body(response),
                               request=request)
