"""The stdio relay: `mcptrace proxy -- CMD [ARGS...]`.

The MCP client starts the proxy instead of the server; the proxy starts the
server (`StdioTarget`) and relays newline-delimited JSON-RPC both ways: the
client's stdin to the server's stdin, the server's stdout to the client's
stdout. Every message is decoded once, as a copy, for the observer; the bytes
relayed are the ones that came in, unless the proxy added something (a trace
context, a request id in a result's `_meta`). Requests the guards refuse are
answered here and never reach the server; calls in flight when the server ends
or stops answering get a JSON-RPC error, and the server is started again.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson

from mcptrace import _fields as f
from mcptrace._errors import INVALID_REQUEST, DownstreamError, ProtocolError
from mcptrace._version import __version__
from mcptrace.proxy._observe import (
    BATCH,
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    TARGET_SERVICE,
    TO_CLIENT,
    TO_TARGET,
    UNOBSERVED,
    Caller,
    Channel,
    classify,
    error_response,
    id_key,
)
from mcptrace.proxy._service import ProxyService
from mcptrace.proxy._supervise import Oversized, StdioTarget, read_line


class StdioRelay:
    def __init__(self, service: ProxyService, command: list[str], *, env: dict[str, str] | None = None) -> None:
        config = service.config
        self.service = service
        self.observer = service.observer
        self.counts = service.telemetry.counts
        self.channel = Channel()
        self.caller = Caller()
        self.target = StdioTarget(
            command, logger=service.logger, counts=self.counts, on_message=self._from_target,
            on_exit=self._target_exited, max_message_bytes=config.target_max_message_bytes,
            backoff=config.restart_backoff, backoff_max=config.restart_backoff_max, env=env,
        )
        self.target.on_oversized = self._oversized_answer
        service.telemetry.target_up = lambda: self.target.up
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()

    # -- client -> target ------------------------------------------------------------------------------

    async def from_client(self, raw: bytes) -> None:
        stripped = raw.strip()
        if not stripped:
            return
        try:
            await self._from_client(stripped)
        except Exception:  # observing must never cost the message: it goes on as it came, counted
            self.counts.message(TO_TARGET, UNOBSERVED)
            await self.target.send(stripped)

    async def _from_client(self, stripped: bytes) -> None:
        try:
            message = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            message = None
        kind = classify(message)
        self.counts.message(TO_TARGET, kind)
        if kind == REQUEST:
            modified, answer = await self._request(message)
            if answer is not None:
                await self.write(orjson.dumps(answer))
            else:
                await self._send(orjson.dumps(message) if modified else stripped, [message])
            return
        if kind == BATCH:
            await self._batch(message)
            return
        if kind == NOTIFICATION:
            self._notification(message, stripped)
        await self.target.send(stripped)

    async def _request(self, message: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """(whether the request was changed; the answer to give the client instead of sending it, or None)."""
        pending = self.observer.open(message, self.channel, self.caller)
        if message["method"] == "initialize":
            self.target.remember_initialize(message.get("params"))
        refusal = await self.observer.admit(pending, self.channel, self.caller)
        return self.observer.modified(pending), refusal

    async def _send(self, data: bytes, requests: list[Any]) -> None:
        if await self.target.send(data):
            return
        error = self._down_error()
        for message in requests:
            pending = self.channel.pending.get(id_key(message.get("id")))
            if pending is not None:
                await self.write(orjson.dumps(self.observer.fail(pending, self.channel, error)))

    async def _batch(self, batch: list[Any]) -> None:
        forward: list[Any] = []
        answers: list[dict[str, Any]] = []
        requests: list[Any] = []
        for item in batch:
            kind = classify(item)
            if kind == REQUEST:
                _, answer = await self._request(item)
                if answer is not None:
                    answers.append(answer)
                    continue
                requests.append(item)
            elif kind == NOTIFICATION:
                self._notification(item, None)
            forward.append(item)
        if answers:
            await self.write(orjson.dumps(answers))
        if forward:
            await self._send(orjson.dumps(forward), requests)

    def _notification(self, message: dict[str, Any], raw: bytes | None) -> None:
        method = message["method"]
        if method == "notifications/cancelled":
            self.observer.cancelled(message, self.channel)
        elif method == "notifications/initialized":
            self.target.remember_initialized(raw or orjson.dumps(message))

    async def oversized_request(self, line: Oversized) -> None:
        self.counts.message(TO_TARGET, "too_large")
        error = ProtocolError(f"Request exceeds {self.service.config.max_body_bytes} bytes", code=INVALID_REQUEST)
        self.service.logger.emit(f.EV_REQUEST_REJECTED, "warning", **{
            f.TRANSPORT: "stdio", f.ERROR: "request too large", f.ERROR_CODE: INVALID_REQUEST,
            f.MESSAGE: f"a message of {line.size} bytes from the client",
        })
        if line.msg_id is not None:
            await self.write(orjson.dumps(error_response(line.msg_id, error)))

    # -- target -> client ------------------------------------------------------------------------------

    async def _from_target(self, raw: bytes, message: Any) -> None:
        kind = classify(message)
        self.counts.message(TO_CLIENT, kind)
        try:
            if kind == RESPONSE:
                if self.observer.answer(message, self.channel):
                    raw = orjson.dumps(message)
            elif kind == BATCH:
                changed = [self.observer.answer(m, self.channel) for m in message if classify(m) == RESPONSE]
                if any(changed):
                    raw = orjson.dumps(message)
        except Exception:  # the answer goes on as it came, counted
            self.counts.message(TO_CLIENT, UNOBSERVED)
        await self.write(raw)

    async def _oversized_answer(self, msg_id: Any, size: int) -> None:
        pending = self.channel.pending.get(id_key(msg_id))
        if pending is None:
            return
        error = DownstreamError(TARGET_SERVICE, f"its answer of {size} bytes is over the proxy's limit of "
                                                f"{self.service.config.target_max_message_bytes} bytes")
        await self.write(orjson.dumps(self.observer.fail(pending, self.channel, error, target_fault=False)))

    async def _target_exited(self, code: int, delay: float) -> None:
        error = DownstreamError(TARGET_SERVICE, f"the server exited with status {code} before answering; "
                                                f"it is started again in {delay:g} s")
        for answer in self.observer.fail_all(self.channel, error):
            await self.write(orjson.dumps(answer))

    def _down_error(self) -> DownstreamError:
        restart_at = self.target.restart_at
        when = f"; it is started again in {max(0.0, restart_at - time.monotonic()):.1f} s" \
            if restart_at is not None else ""
        return DownstreamError(TARGET_SERVICE, f"the server is not running{when}")

    async def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            return
        async with self._write_lock:
            writer.write(data + b"\n")
            await writer.drain()

    # -- running ---------------------------------------------------------------------------------------

    async def _expire(self) -> None:
        interval = max(0.05, min(1.0, self.observer.request_timeout / 10))
        while True:
            await asyncio.sleep(interval)  # a periodic sweep, not a synchronisation
            for channel, pending in self.observer.expired():
                await self.write(orjson.dumps(self.observer.fail(pending, channel, self.observer.timeout_error())))
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": pending.msg_id, "reason": "the proxy's request timeout"}}
                await self.target.send(orjson.dumps(cancel))

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        """Relay until the client closes stdin (or the proxy is told to stop)."""
        self._writer = writer
        limit = self.service.config.max_body_bytes
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.target.run)
            tg.start_soon(self._expire)
            while True:
                line = await read_line(reader, limit)
                if line is None:
                    break
                if isinstance(line, Oversized):
                    await self.oversized_request(line)
                    continue
                await self.from_client(line)
            await self.target.close()
            tg.cancel_scope.cancel()
        return 0


async def _std_streams(limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), sys.stdout,
    )
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


def serve_stdio(service: ProxyService, command: list[str], *, ready_file: Path | None = None) -> int:
    """Run the relay on this process's stdin/stdout; the log goes to the log file (stdout is the protocol's)."""
    relay = StdioRelay(service, command)
    logger = service.logger
    name = relay.target.name

    async def main() -> int:
        try:
            await relay.target.start()
        except OSError as exc:
            logger.emit(f.EV_SERVER_STOPPED, "error", **{
                f.TARGET: name, f.TRANSPORT: "stdio", f.ERROR: f"{type(exc).__name__}: {exc}"[:200],
                f.MESSAGE: "the server could not be started",
            })
            print(f"mcptrace proxy: cannot start {name}: {exc}", file=sys.stderr)
            return 1
        logger.emit(f.EV_SERVER_STARTED, **{
            f.MESSAGE: f"mcptrace {__version__} proxy on stdio", f.TARGET: name, f.TRANSPORT: "stdio",
        })
        reader, writer = await _std_streams(service.config.max_body_bytes)
        if ready_file is not None:
            ready_file.write_text("stdio")
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True
            if task is not None:
                task.cancel()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            return await relay.run(reader, writer)
        except asyncio.CancelledError:
            if not stopped:
                raise
            return 0
        finally:
            with anyio.CancelScope(shield=True):
                await relay.target.close()
                await service.aclose()

    try:
        return anyio.run(main)
    finally:
        logger.emit(f.EV_SERVER_STOPPED, **{f.MESSAGE: "shutdown complete", f.TARGET: name, f.TRANSPORT: "stdio"})
        logger.close()
