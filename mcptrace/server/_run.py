"""Running the server: HTTP under uvicorn with graceful shutdown, or stdio."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._config import Config
from mcptrace._errors import ConfigError
from mcptrace._version import __version__
from mcptrace.guards._setup import auth_policy
from mcptrace.middleware._ids import new_request_id
from mcptrace.server._app import build_app, build_service, make_logger
from mcptrace.server._bind import check_bind
from mcptrace.server._headtimeout import HEAD_TIMEOUT_MESSAGE, HEAD_TOO_LARGE_MESSAGE, head_deadline_protocol
from mcptrace.server._stdio import StdioDrain
from mcptrace.telemetry._log import EventLogger


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; `IPPROTO_TCP` spelled out so asyncio sets TCP_NODELAY on every connection.

    With protocol 0 asyncio leaves Nagle's algorithm on, and each response (headers and body written
    separately) then waits ~40 ms for the client's delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason} (pick another --port, or 0 for a free one)"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve_http(config: Config, *, ready_file: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish and the log is flushed."""
    overridden = check_bind(config.host, allow_non_loopback=config.allow_non_loopback)
    auth_warning = auth_policy(config)
    logger = make_logger(config)
    service = build_service(config, logger=logger)
    app = build_app(service)
    run_http(app, config, logger, ready_file=ready_file, overridden=overridden, auth_warning=auth_warning)


def run_http(
    app: ASGIApp, config: Config, logger: EventLogger, *, ready_file: Path | None, overridden: bool,
    auth_warning: str | None, name: str = f"mcptrace {__version__}", fields: dict[str, Any] | None = None,
) -> None:
    """Bind, log the start (and the warnings of `check_bind` and `auth_policy`), serve under uvicorn until
    SIGTERM/SIGINT with a graceful shutdown, then close the log. Shared by `serve` and `proxy`."""
    fields = fields or {}
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    url = f"http://{config.host}:{port}/mcp"
    if overridden:
        logger.emit(f.EV_SERVER_STARTED, "warning", **{
            f.MESSAGE: f"bound to non-loopback {config.host} by explicit override; put a TLS proxy in front",
            **fields})
        print(f"mcptrace: WARNING: listening on non-loopback {config.host}", file=sys.stderr)
    if auth_warning:
        logger.emit(f.EV_AUTH_WARNING, "warning", **{f.MESSAGE: auth_warning, f.TRANSPORT: "http", **fields})
        print(f"mcptrace: WARNING: {auth_warning}", file=sys.stderr)
    logger.emit(f.EV_SERVER_STARTED, **{f.MESSAGE: f"{name} serving {url}", f.TRANSPORT: "http", **fields})
    print(f"mcptrace: serving {url} (logs: {config.resolved_log_file})", file=sys.stderr, flush=True)
    calls = _CallsInFlight(app)
    server = _Server(calls, uvicorn.Config(
        calls, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=30,
        timeout_keep_alive=30,
        http=head_deadline_protocol(config.header_timeout, max_head_bytes=config.max_header_bytes),
        h11_max_incomplete_event_size=max(config.max_header_bytes, 16 * 1024),
    ))
    if ready_file is not None:
        _announce_when_started(server, ready_file, url)
    parser_rejections = _ParserRejections(logger)
    logging.getLogger("uvicorn.error").addHandler(parser_rejections)
    try:
        server.run(sockets=[sock])
    finally:
        logging.getLogger("uvicorn.error").removeHandler(parser_rejections)
        logger.close()


class _CallsInFlight:
    """Counts the POSTs (JSON-RPC calls) the app is still answering, for a shutdown that lets them finish."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.posts = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        self.posts += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.posts -= 1


class _Server(uvicorn.Server):
    """uvicorn with a shutdown that lets calls in flight finish.

    On SIGTERM sse-starlette (under the SDK) would end every SSE stream at once, cutting tool calls
    that answer over SSE. Here the server stops accepting, waits (up to the graceful timeout) for the
    POSTs in flight, and only then ends the streams that never finish on their own (GET streams).
    And uvicorn, after a graceful shutdown, raises the SIGTERM again with the default handler, which
    ends the process inside `run()` with status -15 before `serve_http` closes the log; here the
    signal only starts the shutdown and the process exits normally (status 0).
    """

    def __init__(self, calls: _CallsInFlight, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.calls = calls
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + (self.config.timeout_graceful_shutdown or 30)
        while self.calls.posts and not self.force_exit and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        AppStatus.should_exit = True
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


class _ParserRejections(logging.Handler):
    """uvicorn refuses requests before any app sees them (unparseable, or a head that never ends); log those too."""

    def __init__(self, logger: EventLogger) -> None:
        super().__init__(logging.WARNING)
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message == "Invalid HTTP request received.":
            status, error = 400, "the HTTP request could not be parsed"
        elif message == HEAD_TIMEOUT_MESSAGE:
            status, error = 408, "the request headers did not arrive in time"
        elif message == HEAD_TOO_LARGE_MESSAGE:
            status, error = 431, "the request head was too large"
        else:
            return
        request_id = getattr(record, "mcptrace_request_id", None) or new_request_id()
        self.logger.emit(f.EV_REQUEST_REJECTED, "warning", **{
            f.REQUEST_ID: request_id, f.HTTP_STATUS: status, f.TRANSPORT: "http", f.ERROR: error,
        })
        self.logger.commit()  # uvicorn logs before it answers: the line is on record before the answer leaves


def _announce_when_started(server: uvicorn.Server, ready_file: Path, url: str) -> None:
    original = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original(sockets=sockets)
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(url)
        tmp.replace(ready_file)

    server.startup = startup  # type: ignore[method-assign]


def serve_stdio(config: Config) -> None:
    """JSON-RPC over stdin/stdout; logs go to the log file (stdout belongs to the protocol)."""
    logger = make_logger(config)
    service = build_service(config, logger=logger, transport="stdio")

    async def main() -> None:
        import httpx

        service.deps.http = httpx.AsyncClient()
        try:
            logger.emit(f.EV_SERVER_STARTED, **{f.MESSAGE: f"mcptrace {__version__} on stdio", f.TRANSPORT: "stdio"})
            opened = time.monotonic()
            try:
                await service.mcp.run_stdio_async()
            finally:
                # One client, one session: it lasts as long as the pipe (recorded before the final export).
                if service.telemetry is not None:
                    service.telemetry.instrumentation.record_session(time.monotonic() - opened)
        finally:
            await service.aclose()

    try:
        with StdioDrain():  # every request read is answered on stdout before the end of stdin stops the SDK
            anyio.run(main)
    except KeyboardInterrupt:
        pass
    finally:
        logger.emit(f.EV_SERVER_STOPPED, **{f.MESSAGE: "shutdown complete", f.TRANSPORT: "stdio"})
        logger.close()
