"""Target supervision: one stdio MCP server as a child process, kept running and kept honest.

`StdioTarget` starts the command, writes messages to its stdin, and reads its
stdout one line (one JSON-RPC message) at a time. Only JSON reaches the relay:
a line that is not JSON (a stray `print`) or is over the size limit is logged as
`target_output_rejected`, counted, and never forwarded as protocol. stderr is
the server's own and is passed through. When the process ends, the relay hears
of it (to answer the calls in flight), the exit is logged as `target_exited`,
and the command is started again after a backoff that doubles with each quick
restart in a row. After a restart the client's handshake (`initialize`, then
`notifications/initialized`) is replayed, with the proxy's own request id, so
the client's session goes on against the new process.

The proxy's own requests (the health check's `ping`, the replayed
`initialize`) carry ids starting with `mcptrace-`; their answers stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mcptrace import _fields as f
from mcptrace.proxy._telemetry import Counts
from mcptrace.telemetry._log import EventLogger

#: Called with each JSON line of the target's stdout: (raw bytes, decoded message).
OnMessage = Callable[[bytes, Any], Awaitable[None]]
#: Called when the process ended: (exit status, seconds until the restart).
OnExit = Callable[[int, float], Awaitable[None]]

INTERNAL_ID_PREFIX = "mcptrace-"
_LOGGED_TEXT = 200
#: A run at least this long counts as stable: the next restart waits the initial backoff again.
_STABLE_SECONDS = 10.0
_ID_AT_START = re.compile(rb'^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(-?\d{1,19}|"[^"\\]{0,200}")')
_ID_AT_END = re.compile(rb'"id"\s*:\s*(-?\d{1,19}|"[^"\\]{0,200}")\s*\}\s*$')


@dataclass(frozen=True)
class Oversized:
    """A line over the size limit, read to its end and dropped; its id, when its first or last bytes show it."""

    size: int
    msg_id: Any = None


async def read_line(reader: asyncio.StreamReader, limit: int) -> bytes | Oversized | None:
    """The next line (with its newline), an `Oversized` marker for a line over `limit` bytes, or None at EOF.

    Lines are framed by the stream reader (its limit is `limit`); an oversized line is drained
    in bounded chunks, so memory stays bounded whatever the peer sends.
    """
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        first = await reader.read(max(exc.consumed, 1))
    size, head, tail = len(first), first[:4096], first[-4096:]
    while True:
        try:
            chunk = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            chunk = exc.partial
            size += len(chunk)
            tail = (tail + chunk)[-4096:]
            break
        except asyncio.LimitOverrunError as exc:
            chunk = await reader.read(max(exc.consumed, 1))
            size += len(chunk)
            tail = (tail + chunk)[-4096:]
            continue
        size += len(chunk)
        tail = (tail + chunk)[-4096:]
        break
    return Oversized(size, sniff_id(head, tail))


def sniff_id(head: bytes, tail: bytes) -> Any:
    """The JSON-RPC id of a message too large to decode, from where SDKs put it (first or last member)."""
    for pattern, text in ((_ID_AT_START, head), (_ID_AT_END, tail)):
        match = pattern.search(text)
        if match:
            try:
                return orjson.loads(match.group(1))
            except orjson.JSONDecodeError:
                continue
    return None


def _die_with_parent() -> None:
    """In the child, before it runs the server: end it when the proxy dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def describe(command: Sequence[str]) -> str:
    """The command as one line for logs and metrics."""
    return shlex.join(command)[:_LOGGED_TEXT]


class StdioTarget:
    def __init__(
        self, command: Sequence[str], *, logger: EventLogger, counts: Counts, on_message: OnMessage, on_exit: OnExit,
        max_message_bytes: int, backoff: float = 0.25, backoff_max: float = 30.0, env: dict[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.name = describe(command)
        self.logger = logger
        self.counts = counts
        self.on_message = on_message
        self.on_exit = on_exit
        self.max_message_bytes = max_message_bytes
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.env = env
        #: Called with (id, size) of an answer too large to forward, so the waiting call gets an error.
        self.on_oversized: Callable[[Any, int], Awaitable[None]] | None = None
        #: The client's handshake, replayed after a restart: (initialize request, initialized notification).
        self.handshake: tuple[dict[str, Any] | None, bytes | None] = (None, None)
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        #: When the process will be started again, while it is down.
        self.restart_at: float | None = None
        self._internal: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._write_lock = asyncio.Lock()
        self._running = asyncio.Event()
        #: Set while the client's messages may go to the process (not while a handshake is replayed).
        self._ready = asyncio.Event()
        self._replay: asyncio.Task[None] | None = None
        self._last_rejection_log = 0.0
        self._unlogged_rejections = 0

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start the process the first time; raises `OSError` when the command cannot run at all."""
        await self._spawn()

    async def _spawn(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            limit=self.max_message_bytes, env=self.env, start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.starts += 1
        self.restart_at = None
        self._running.set()
        if self.starts == 1:
            self._ready.set()
        self.logger.emit(f.EV_TARGET_STARTED, **{
            f.TARGET: self.name, f.MESSAGE: f"started process {self.process.pid}", f.TRANSPORT: "stdio",
        })

    async def run(self) -> None:
        """Relay the target's output; restart it whenever it ends, until `close()`."""
        quick_restarts = 0
        while not self._closing:
            process = self.process
            if process is None:
                return
            started = time.monotonic()
            assert process.stdout is not None
            await self._pump(process.stdout)
            code = await process.wait()
            self._running.clear()
            self._ready.clear()
            if self._closing:
                return
            quick_restarts = 0 if time.monotonic() - started >= _STABLE_SECONDS else quick_restarts + 1
            delay = min(self.backoff_max, self.backoff * 2 ** max(0, quick_restarts - 1))
            self.restart_at = time.monotonic() + delay
            self._fail_internal(f"the server exited with status {code}")
            self.logger.emit(f.EV_TARGET_EXITED, "error", **{
                f.TARGET: self.name, f.EXIT_CODE: code, f.RESTART_IN_MS: round(delay * 1000), f.TRANSPORT: "stdio",
                f.MESSAGE: f"process {process.pid} exited with status {code}; restarting in {delay:g} s",
            })
            await self.on_exit(code, delay)
            await asyncio.sleep(delay)  # the backoff itself, not a synchronisation
            while not self._closing:
                try:
                    await self._spawn()
                    break
                except OSError as exc:
                    delay = min(self.backoff_max, delay * 2)
                    self.restart_at = time.monotonic() + delay
                    self.logger.emit(f.EV_TARGET_EXITED, "error", **{
                        f.TARGET: self.name, f.RESTART_IN_MS: round(delay * 1000), f.TRANSPORT: "stdio",
                        f.ERROR: f"{type(exc).__name__}: {exc}"[:_LOGGED_TEXT],
                        f.MESSAGE: f"could not start the server; retrying in {delay:g} s",
                    })
                    await asyncio.sleep(delay)
            if self._closing:
                return
            self.counts.restarts += 1
            # Replayed beside the pump that reads its answer (the next turn of this loop).
            self._replay = asyncio.get_running_loop().create_task(self._replay_handshake())

    async def _pump(self, stdout: asyncio.StreamReader) -> None:
        while True:
            line = await read_line(stdout, self.max_message_bytes)
            if line is None:
                return
            if isinstance(line, Oversized):
                self._reject("too_large", f"a message of {line.size} bytes, over the limit of "
                             f"{self.max_message_bytes}", b"")
                if line.msg_id is not None and self.on_oversized is not None:
                    await self.on_oversized(line.msg_id, line.size)
                continue
            stripped = line.strip()
            if not stripped:
                continue
            try:
                message = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                self._reject("not_json", "a line that is not JSON", stripped)
                continue
            if isinstance(message, dict) and self._internal_answer(message):
                continue
            try:
                await self.on_message(stripped, message)
            except Exception as exc:  # the relay must keep reading whatever one message did
                self.logger.emit(f.EV_TARGET_OUTPUT_REJECTED, "error", **{
                    f.TARGET: self.name, f.TRANSPORT: "stdio",
                    f.ERROR: f"{type(exc).__name__}: {exc}"[:_LOGGED_TEXT], f.MESSAGE: "a message could not be relayed",
                })

    def _reject(self, reason: str, what: str, line: bytes) -> None:
        self.counts.rejected(reason)
        self._unlogged_rejections += 1
        now = time.monotonic()
        if now - self._last_rejection_log < 0.1 and reason != "too_large":
            return  # a chatty server: the next logged line carries the count
        self._last_rejection_log = now
        count, self._unlogged_rejections = self._unlogged_rejections, 0
        self.logger.emit(f.EV_TARGET_OUTPUT_REJECTED, "warning", **{
            f.TARGET: self.name, f.TRANSPORT: "stdio", f.COUNT: count,
            f.ERROR: f"the server wrote {what} to stdout; not forwarded",
            f.MESSAGE: line[:_LOGGED_TEXT].decode("utf-8", "replace") if line else None,
        })

    async def send(self, data: bytes, *, internal: bool = False) -> bool:
        """Write one message (a line); False when the process is not running.

        A client's message waits while the client's handshake is replayed to a restarted process.
        """
        if not internal and not self._ready.is_set() and self.up:
            try:
                async with asyncio.timeout(30):
                    await self._ready.wait()
            except TimeoutError:
                return False
        process = self.process
        if process is None or process.returncode is not None or process.stdin is None:
            return False
        async with self._write_lock:
            try:
                process.stdin.write(data if data.endswith(b"\n") else data + b"\n")
                await process.stdin.drain()
            except (ConnectionError, RuntimeError, OSError):
                return False
        return True

    async def request(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 5.0) -> Any:
        """A request of the proxy's own; returns the target's answer (a response message).

        Raises `TimeoutError`, or `ConnectionError` when the process is not running or ends first.
        """
        msg_id = f"{INTERNAL_ID_PREFIX}{next(self._ids)}"
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._internal[msg_id] = future
        try:
            if not await self.send(orjson.dumps(message), internal=True):
                raise ConnectionError("the server is not running")
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._internal.pop(msg_id, None)

    def _internal_answer(self, message: dict[str, Any]) -> bool:
        msg_id = message.get("id")
        if not (isinstance(msg_id, str) and msg_id.startswith(INTERNAL_ID_PREFIX)) or "method" in message:
            return False
        future = self._internal.get(msg_id)
        if future is not None and not future.done():
            future.set_result(message)
        return True

    def _fail_internal(self, reason: str) -> None:
        for future in self._internal.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))

    async def _replay_handshake(self) -> None:
        initialize, initialized = self.handshake
        try:
            if initialize is None:
                return
            try:
                await self.request("initialize", initialize, timeout=30.0)
            except (TimeoutError, ConnectionError) as exc:
                self.logger.emit(f.EV_TARGET_STARTED, "warning", **{
                    f.TARGET: self.name, f.TRANSPORT: "stdio",
                    f.ERROR: f"the client's handshake could not be replayed: {exc or 'no answer'}"[:_LOGGED_TEXT],
                })
                return
            if initialized is not None:
                await self.send(initialized, internal=True)
        finally:
            self._ready.set()

    def remember_initialize(self, params: Any) -> None:
        """Keep the client's `initialize` params (without its trace context) to replay after a restart."""
        if not isinstance(params, dict):
            self.handshake = (None, None)
            return
        meta = params.get("_meta")
        if isinstance(meta, dict):
            meta = {k: v for k, v in meta.items() if k not in ("traceparent", "tracestate")}
            params = {**params, "_meta": meta} if meta else {k: v for k, v in params.items() if k != "_meta"}
        self.handshake = (dict(params), None)

    def remember_initialized(self, raw: bytes) -> None:
        self.handshake = (self.handshake[0], raw)

    async def wait_running(self) -> None:
        await self._running.wait()

    async def close(self, *, linger: float = 1.0, grace: float = 3.0) -> int | None:
        """Close stdin and give the server `linger` seconds to end by itself, then SIGTERM, then SIGKILL.

        An MCP client gives its server about two seconds after closing stdin before it signals it; the
        proxy's own stop fits in that. No process is left behind.
        """
        self._closing = True
        process = self.process
        if process is None:
            return None
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(Exception):
                process.stdin.close()
        for sig, wait in ((None, linger), (signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            if sig is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
            try:
                async with asyncio.timeout(wait):
                    return await process.wait()
            except TimeoutError:
                continue
        return process.returncode
