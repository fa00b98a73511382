"""Running each proxy mode: the stdio relay, the HTTP reverse proxy, the stdio-over-HTTP bridge."""

from __future__ import annotations

from pathlib import Path

from mcptrace._config import Config
from mcptrace.proxy._service import build_proxy_service
from mcptrace.proxy._supervise import describe


def serve_stdio_target(config: Config, command: list[str], *, ready_file: Path | None = None) -> int:
    """`mcptrace proxy -- CMD`: relay this process's stdin/stdout to CMD's."""
    from mcptrace.proxy._stdio import serve_stdio

    service = build_proxy_service(config, transport="stdio", target=describe(command))
    return serve_stdio(service, command, ready_file=ready_file)
