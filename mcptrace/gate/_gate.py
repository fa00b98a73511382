"""`mcptrace gate`: the real MCP handshake against a URL, one timed step at a time.

A registry entry can outlive the server it points at. The gate proves a URL
serves MCP right now: `initialize` with a real protocol version, `serverInfo`
and `capabilities` present, `notifications/initialized` accepted, one
non-destructive tool answered. Each step is timed and, when it fails, says why
in one line, so a CI log or an alert names the broken step, not just "down".

The official SDK client drives the wire (SSE or JSON answers alike); the steps
are taken one by one through `ClientSession` so each can be timed on its own.
A new client's first tool call loads the SDK's JSON Schema machinery (imports
and metaschemas, often a second or more); the gate loads it before the first
step and reports that time apart as `client_import_ms`, so each step's time is
the server's and the network's, not this process's start-up.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import httpx2
import pydantic
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcptrace._version import __version__

#: The protocol revision the gate asks for in `initialize`.
GATE_PROTOCOL_VERSION = "2025-11-25"
#: A streaming check fails when the first progress event arrives after this share of the call.
STREAM_LATE_FRACTION = 0.8
#: Calls shorter than this cannot tell a streaming route from a buffering one.
STREAM_MIN_CALL_SECONDS = 0.3


class StepFailed(Exception):
    """One gate step did not pass; the message is the one-line reason."""


@dataclass
class Step:
    name: str
    ok: bool
    duration_ms: float
    detail: str


@dataclass
class GateReport:
    """What the gate found: every step, timed; `ok` only when all of them passed."""

    url: str
    steps: list[Step] = field(default_factory=list)
    server_name: str | None = None
    server_version: str | None = None
    protocol_version: str | None = None
    #: Time spent loading the client's lazily imported modules before the first step (not in any step).
    client_import_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def failed_step(self) -> Step | None:
        return next((s for s in self.steps if not s.ok), None)

    @property
    def duration_ms(self) -> float:
        return round(sum(s.duration_ms for s in self.steps), 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "duration_ms": self.duration_ms,
            "server": {"name": self.server_name, "version": self.server_version},
            "protocol_version": self.protocol_version,
            "client_import_ms": self.client_import_ms,
            "steps": [asdict(s) for s in self.steps],
        }

    def lines(self) -> list[str]:
        """One human line per step: `ok` lines, then a `FAIL` line per failed step with its reason."""
        out = []
        for s in self.steps:
            mark = "ok  " if s.ok else "FAIL"
            out.append(f"{mark} {s.name:<12} {s.duration_ms:8.1f} ms  {s.detail}")
        return out


@dataclass(frozen=True, kw_only=True)
class GateOptions:
    token: str | None = None
    tool: str = "ping"
    arguments: dict[str, Any] = field(default_factory=dict)
    check_streaming: bool = False
    streaming_tool: str = "run_report"
    streaming_arguments: dict[str, Any] = field(default_factory=dict)
    timeout: float = 30.0
    verify: ssl.SSLContext | str | bool = True
    headers: dict[str, str] = field(default_factory=dict)


async def run_gate(url: str, options: GateOptions | None = None) -> GateReport:
    """Run every step against `url`; never raises for a broken server (the report says what broke)."""
    options = options or GateOptions()
    report = GateReport(url=url, client_import_ms=warm_up_client())
    transport_errors: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            transport_errors.append(_describe(message))

    async def on_response(response: httpx2.Response) -> None:
        # Only POSTs carry the gate's messages; a server may refuse the optional GET stream.
        if response.status_code >= 400 and response.request.method == "POST":
            reason = response.reason_phrase or ""
            transport_errors.append(
                f"HTTP {response.status_code} {reason}".strip()
                + f" from {response.request.method} {response.request.url.path}"
            )

    headers = {"user-agent": f"mcptrace-gate/{__version__}", **options.headers}
    if options.token:
        headers["authorization"] = f"Bearer {options.token}"
    http = httpx2.AsyncClient(
        headers=headers,
        verify=options.verify,
        event_hooks={"response": [on_response]},
        timeout=httpx2.Timeout(options.timeout, read=max(options.timeout, 60.0)),
    )
    current: tuple[str, float] = ("initialize", time.perf_counter())
    try:
        async with (
            http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(
                read,
                write,
                message_handler=on_message,
                client_info=types.Implementation(name="mcptrace-gate", version=__version__),
            ) as session,
        ):
            steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
                ("initialize", lambda: _initialize(session, report)),
                ("initialized", lambda: _initialized(session)),
                ("list_tools", lambda: _list_tools(session, options)),
                ("tool", lambda: _call_tool(session, options.tool, options.arguments)),
            ]
            if options.check_streaming:
                steps.append(("streaming", lambda: _check_streaming(session, options)))
            for name, run in steps:
                current = (name, time.perf_counter())
                step = await _timed(name, run, options.timeout, transport_errors)
                report.steps.append(step)
                if not step.ok:
                    break
    except Exception as exc:  # the transport failed underneath the step that was running
        name, started = current
        if not report.steps or report.steps[-1].name != name:
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            report.steps.append(Step(name, False, elapsed, _describe(exc)))
    return report


_client_warm = False


def warm_up_client() -> float:
    """Load what the SDK client imports on its first tool call (JSON Schema validators, their metaschemas).

    Returns the milliseconds it took: zero when this process has already paid for it.
    """
    global _client_warm
    if _client_warm:
        return 0.0
    _client_warm = True
    start = time.perf_counter()
    from jsonschema.validators import validator_for

    validator_for({}).check_schema({"type": "object", "properties": {"result": {"type": "string"}}})
    return round((time.perf_counter() - start) * 1000, 2)


async def _timed(
    name: str,
    run: Callable[[], Awaitable[str]],
    timeout: float,
    transport_errors: list[str],
) -> Step:
    start = time.perf_counter()
    errors_before = len(transport_errors)
    ok, detail = True, ""
    try:
        with anyio.fail_after(timeout):
            detail = await run()
    except TimeoutError:
        ok, detail = False, f"no answer within {timeout:g}s"
    except StepFailed as exc:
        ok, detail = False, str(exc)
    except MCPError as exc:
        ok, detail = False, f"JSON-RPC error {exc.code}: {exc.error.message}"
    except pydantic.ValidationError as exc:
        ok, detail = False, f"malformed answer: {_first_validation_error(exc)}"
    except Exception as exc:
        ok, detail = False, _describe(exc)
    if ok and len(transport_errors) > errors_before:
        # e.g. a notification the server refused: it has no answer to fail on, only its HTTP status
        ok, detail = False, transport_errors[-1]
    elif not ok and transport_errors:
        detail = f"{detail} ({transport_errors[-1]})"
    elapsed = round((time.perf_counter() - start) * 1000, 2)
    return Step(name, ok, elapsed, detail)


async def _initialize(session: ClientSession, report: GateReport) -> str:
    result = await session.send_request(
        types.InitializeRequest(
            params=types.InitializeRequestParams(
                protocol_version=GATE_PROTOCOL_VERSION,
                capabilities=types.ClientCapabilities(),
                client_info=types.Implementation(name="mcptrace-gate", version=__version__),
            )
        ),
        types.InitializeResult,
    )
    if result.server_info is None or not result.server_info.name:
        raise StepFailed("the answer has no serverInfo.name")
    if result.capabilities is None:
        raise StepFailed("the answer has no capabilities object")
    session.adopt(result)
    report.server_name = result.server_info.name
    report.server_version = result.server_info.version
    report.protocol_version = result.protocol_version
    return f"{result.server_info.name} {result.server_info.version} speaks {result.protocol_version}"


async def _initialized(session: ClientSession) -> str:
    await session.send_notification(types.InitializedNotification())
    # A notification has no answer; an immediate `ping` proves the session survived it.
    await session.send_ping()
    return "notification accepted; session answers ping"


async def _list_tools(session: ClientSession, options: GateOptions) -> str:
    # The SDK lists tools before a first call anyway (to validate results): done here, it is timed on its own.
    result = await session.list_tools()
    names = {t.name for t in result.tools}
    wanted = [options.tool] + ([options.streaming_tool] if options.check_streaming else [])
    missing = [n for n in wanted if n not in names]
    if missing:  # not a failure by itself: the call says what the server makes of it
        return f"{len(names)} tools; {', '.join(missing)} not among them"
    return f"{len(names)} tools, {', '.join(wanted)} among them"


async def _call_tool(session: ClientSession, name: str, arguments: dict[str, Any]) -> str:
    result = await session.call_tool(name, arguments)
    if result.is_error:
        raise StepFailed(f"tool {name!r} answered an error: {_text(result)[:200]}")
    return f"{name} -> {_text(result)[:60]!r}"


async def _check_streaming(session: ClientSession, options: GateOptions) -> str:
    arrivals: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        arrivals.append(time.monotonic())

    start = time.monotonic()
    result = await session.call_tool(
        options.streaming_tool,
        options.streaming_arguments,
        progress_callback=on_progress,
    )
    end = time.monotonic()
    if result.is_error:
        raise StepFailed(f"tool {options.streaming_tool!r} answered an error: {_text(result)[:200]}")
    total = end - start
    if not arrivals:
        raise StepFailed(f"tool {options.streaming_tool!r} reported no progress; cannot check streaming")
    if total < STREAM_MIN_CALL_SECONDS:
        raise StepFailed(
            f"{options.streaming_tool!r} finished in {total * 1000:.0f} ms; too short to tell streaming "
            f"from buffering (needs >= {STREAM_MIN_CALL_SECONDS * 1000:.0f} ms)",
        )
    first = arrivals[0] - start
    summary = (
        f"first of {len(arrivals)} progress events after {first * 1000:.0f} ms "
        f"of a {total * 1000:.0f} ms call"
    )
    if first > STREAM_LATE_FRACTION * total:
        raise StepFailed(f"events arrive only at the end (buffering proxy?): {summary}")
    return summary


def _text(result: types.CallToolResult) -> str:
    parts = [getattr(c, "text", "") for c in result.content]
    return " ".join(p for p in parts if p) or "(no text content)"


def _first_validation_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))


def _describe(exc: BaseException) -> str:
    """A one-line reason from an exception, unwrapping exception groups to the first real cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
