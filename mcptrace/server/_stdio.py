"""`serve --stdio`: every request read from stdin is answered on stdout before the process ends.

The SDK takes the end of stdin for the client being gone and cancels the
requests still running, with their answers. A client that writes its last
request and closes its end of the pipe (a script, `printf ... | mcptrace serve
--stdio`, an agent that half-closes) then loses the last answers, although the
log says they were sent.

`StdioDrain` puts two pipes of its own between the process's stdin/stdout and
the SDK. One thread copies stdin to the SDK and notes the id of every request;
another copies the SDK's output to the real stdout, unbuffered, and strikes off
each answered id once its bytes are written. When the real stdin ends, the SDK
sees the end only after every request read has been answered and written (or
after `drain_timeout` seconds, for a request that never ends; or at once when
the client no longer reads stdout). The SDK's own stdio transport is used
unchanged: it still reads and writes file descriptors 0 and 1, now these pipes.
"""

from __future__ import annotations

import os
import select
import threading
from collections import Counter
from types import TracebackType
from typing import Any

import orjson

#: Seconds a request still running at the end of stdin may take to be answered.
DRAIN_TIMEOUT = 30.0
_READ = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _message(line: bytes) -> dict[str, Any] | None:
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def _request_id(value: Any) -> str | int | None:
    """A JSON-RPC request id as a key (1 and "1" stay distinct), or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return value


class StdioDrain:
    """Context manager around serving stdio: on exit, every answer written is copied out, then fds 0/1 restored."""

    def __init__(self, *, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        self.drain_timeout = drain_timeout
        self._unanswered: Counter[str | int] = Counter()
        self._changed = threading.Condition()
        self._client_gone = False

    def __enter__(self) -> StdioDrain:
        self._stdin, self._stdout = os.dup(0), os.dup(1)
        sdk_in, self._to_sdk = os.pipe()
        self._from_sdk, sdk_out = os.pipe()
        self._stop_read, self._stop_write = os.pipe()
        os.dup2(sdk_in, 0)
        os.dup2(sdk_out, 1)
        os.close(sdk_in)
        os.close(sdk_out)
        self._in = threading.Thread(target=self._copy_in, name="mcptrace-stdin", daemon=True)
        self._out = threading.Thread(target=self._copy_out, name="mcptrace-stdout", daemon=True)
        self._in.start()
        self._out.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        # The SDK has returned: all it wrote is in the pipe. Point fd 1 back at the real stdout, let the
        # copier empty the pipe, then give fd 0 back too.
        os.dup2(self._stdout, 1)
        os.write(self._stop_write, b"x")
        self._out.join(self.drain_timeout)
        os.dup2(self._stdin, 0)
        for fd in (self._from_sdk, self._stop_read, self._stop_write, self._stdout):
            os.close(fd)
        # `_stdin` and `_to_sdk` belong to the stdin thread, which may still wait on a client that never
        # closes its end (the server was stopped by a signal): it is a daemon and ends with the process.

    def _copy_in(self) -> None:
        rest = b""
        try:
            while data := os.read(self._stdin, _READ):
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    self._note_request(line)
                _write_all(self._to_sdk, data)  # noted first: an answer can never overtake its request
        except OSError:
            pass
        if rest.strip():
            self._note_request(rest)  # a last line without its newline is still read by the SDK
        with self._changed:
            self._changed.wait_for(lambda: not self._unanswered or self._client_gone, self.drain_timeout)
        os.close(self._to_sdk)  # now the SDK sees the end of stdin

    def _note_request(self, line: bytes) -> None:
        message = _message(line)
        if message is None or not isinstance(method := message.get("method"), str):
            return
        if (request_id := _request_id(message.get("id"))) is not None:
            with self._changed:
                self._unanswered[request_id] += 1
        elif method == "notifications/cancelled":  # the SDK never answers a request its client cancelled
            params = message.get("params")
            cancelled = _request_id(params.get("requestId")) if isinstance(params, dict) else None
            if cancelled is not None:
                self._answered(cancelled)

    def _copy_out(self) -> None:
        rest = b""
        while True:
            readable, _, _ = select.select([self._from_sdk, self._stop_read], [], [])
            if self._from_sdk not in readable:
                return  # stopped, and the pipe is empty
            data = os.read(self._from_sdk, _READ)
            if not data:
                return
            if not self._client_gone:
                try:
                    _write_all(self._stdout, data)
                except OSError:  # the client closed stdout: nobody is waiting for answers any more
                    with self._changed:
                        self._client_gone = True
                        self._changed.notify_all()
            if not self._unanswered:
                rest = b""
                continue
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                message = _message(line)
                if message is not None and "method" not in message and ("result" in message or "error" in message):
                    request_id = _request_id(message.get("id"))
                    if request_id is not None:
                        self._answered(request_id)

    def _answered(self, request_id: str | int) -> None:
        with self._changed:
            if self._unanswered[request_id] > 1:
                self._unanswered[request_id] -= 1
            else:
                self._unanswered.pop(request_id, None)
                if not self._unanswered:
                    self._changed.notify_all()
