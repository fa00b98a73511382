"""`mcptrace gate` and `mcptrace probe`: is the server at URL really serving MCP, now and over time."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from mcptrace._errors import ConfigError
from mcptrace.cli._options import parse_seconds
from mcptrace.cli._render import add_format

#: The CSV columns of a gate report: one row per step.
STEP_COLUMNS = ("url", "name", "ok", "duration_ms", "detail")

if TYPE_CHECKING:
    from mcptrace.gate._gate import GateOptions, GateReport


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every gated command shares (gate, probe, registry update)."""
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        help="send 'Authorization: Bearer $NAME' (the token itself never goes on the command line)",
    )
    parser.add_argument("--tool", default="ping", help="non-destructive tool to call (default ping)")
    parser.add_argument("--args", default="{}", metavar="JSON", help="arguments of --tool as a JSON object")
    parser.add_argument(
        "--check-streaming",
        action="store_true",
        help="also call a progress-reporting tool and fail if its events arrive only at the end",
    )
    parser.add_argument(
        "--streaming-tool", default="run_report", help="tool for --check-streaming (default run_report)"
    )
    parser.add_argument(
        "--streaming-args",
        default="{}",
        metavar="JSON",
        help="arguments of --streaming-tool as a JSON object",
    )
    parser.add_argument(
        "--timeout", type=parse_seconds, default=30.0, metavar="DURATION",
        help="time allowed per step (10s, 1m; a bare number is seconds; default 30s)",
    )
    parser.add_argument("--cacert", metavar="FILE", help="CA bundle to verify an https URL against")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gate = sub.add_parser(
        "gate", help="handshake with an MCP server and call one tool; exit 0 only if all passed"
    )
    gate.add_argument("url", help="the MCP endpoint, e.g. https://mcp.example.com/mcp")
    add_gate_arguments(gate)
    add_format(gate, json_alias=True)
    gate.set_defaults(func=_gate)

    probe = sub.add_parser("probe", help="run the gate on a schedule: a log line and metrics per run, alerts")
    probe.add_argument("url", help="the MCP endpoint, e.g. https://mcp.example.com/mcp")
    add_gate_arguments(probe)
    probe.add_argument(
        "--every", type=parse_seconds, required=True, metavar="DURATION",
        help="time between runs (30s, 5m; a bare number is seconds)",
    )
    probe.add_argument("--count", type=int, help="stop after N runs (default: run until interrupted)")
    probe.add_argument(
        "--alert-after",
        type=int,
        default=3,
        metavar="N",
        help="consecutive failures before the hooks run (default 3)",
    )
    probe.add_argument(
        "--on-failure", metavar="CMD", help="shell command run once per outage (env: MCPTRACE_PROBE_*)"
    )
    probe.add_argument("--webhook", metavar="URL", help="POST a JSON alert here once per outage")
    probe.add_argument("--log-file", help="append the JSON lines here too (they always go to stderr)")
    probe.set_defaults(func=_probe)


def gate_options(args: argparse.Namespace) -> GateOptions:
    from mcptrace.gate._gate import GateOptions

    url = getattr(args, "url", "")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{url!r} is not an http:// or https:// MCP endpoint")
    if not args.timeout > 0:
        raise ConfigError("--timeout must be a positive duration (e.g. 10s)")
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ConfigError(f"--token-env {args.token_env}: that environment variable is not set or empty")
    arguments = _json_object("--args", args.args)
    return GateOptions(
        token=token,
        tool=args.tool,
        arguments=arguments,
        check_streaming=args.check_streaming,
        streaming_tool=args.streaming_tool,
        streaming_arguments=_json_object("--streaming-args", args.streaming_args),
        timeout=args.timeout,
        verify=_verify(args.cacert),
    )


def _json_object(flag: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


def _verify(cacert: str | None) -> Any:
    if cacert is None:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--cacert {cacert}: {exc}") from None


def print_report(report: GateReport, *, fmt: str) -> None:
    """JSON: `GateReport.to_dict()`; CSV: one row per step; table: a line per step, then PASS or FAIL."""
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2))
        return
    if fmt == "csv":
        from mcptrace.cli._render import emit

        emit([{"url": report.url, **asdict(s)} for s in report.steps], STEP_COLUMNS, "csv")
        return
    for line in report.lines():
        print(line, file=sys.stdout if line.startswith("ok") else sys.stderr)
    verdict = "PASS" if report.ok else "FAIL"
    print(f"{verdict} {report.url} ({report.duration_ms:.0f} ms; client start-up "
          f"{report.client_import_ms:.0f} ms before the first step, not counted)")


def _gate(args: argparse.Namespace) -> int:
    import anyio

    from mcptrace.gate._gate import run_gate

    report = anyio.run(run_gate, args.url, gate_options(args))
    print_report(report, fmt=args.format)
    return 0 if report.ok else 1


def _probe(args: argparse.Namespace) -> int:
    from mcptrace.gate._probe import Alerting, run_probe

    if args.every <= 0:
        raise ConfigError("--every must be a positive duration (e.g. 30s)")
    if args.count is not None and args.count < 1:
        raise ConfigError("--count must be at least 1")
    alerting = Alerting(after=max(1, args.alert_after), command=args.on_failure, webhook=args.webhook)
    state = run_probe(
        args.url,
        gate_options(args),
        every=args.every,
        count=args.count,
        alerting=alerting,
        log_file=args.log_file,
    )
    return 0 if state.consecutive_failures == 0 else 1
