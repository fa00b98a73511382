"""Running each proxy mode: the stdio relay, the HTTP reverse proxy, the stdio-over-HTTP bridge."""

from __future__ import annotations

from pathlib import Path

from mcptrace import _fields as f
from mcptrace._config import Config
from mcptrace._errors import ConfigError
from mcptrace._version import __version__
from mcptrace.proxy._service import build_proxy_service
from mcptrace.proxy._supervise import describe


def serve_stdio_target(config: Config, command: list[str], *, ready_file: Path | None = None) -> int:
    """`mcptrace proxy -- CMD`: relay this process's stdin/stdout to CMD's."""
    from mcptrace.proxy._stdio import serve_stdio

    service = build_proxy_service(config, transport="stdio", target=describe(command))
    return serve_stdio(service, command, ready_file=ready_file)


def serve_http_target(config: Config, url: str, *, ready_file: Path | None = None) -> int:
    """`mcptrace proxy --target URL`: a Streamable HTTP reverse proxy on `config.host:config.port`."""
    from mcptrace.guards._setup import auth_policy
    from mcptrace.proxy._app import build_front
    from mcptrace.proxy._http import HttpForwarder
    from mcptrace.server._bind import check_bind
    from mcptrace.server._run import run_http

    _check_url(url)
    overridden = check_bind(config.host, allow_non_loopback=config.allow_non_loopback)
    auth_warning = auth_policy(config)
    service = build_proxy_service(config, transport="http", target=url)
    app = build_front(service, HttpForwarder(service, url), target=url)
    run_http(app, config, service.logger, ready_file=ready_file, overridden=overridden, auth_warning=auth_warning,
             name=f"mcptrace {__version__} proxy for {url},", fields={f.TARGET: url})
    return 0


def _check_url(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--target must be an http:// or https:// URL of an MCP endpoint, got {url!r}")


def serve_bridge(config: Config, command: list[str], *, ready_file: Path | None = None) -> int:
    """`mcptrace proxy --http -- CMD`: serve the stdio server CMD over Streamable HTTP, a process per session."""
    from mcptrace.guards._setup import auth_policy
    from mcptrace.proxy._app import build_front
    from mcptrace.proxy._bridge import Bridge
    from mcptrace.server._bind import check_bind
    from mcptrace.server._run import run_http

    overridden = check_bind(config.host, allow_non_loopback=config.allow_non_loopback)
    auth_warning = auth_policy(config)
    name = describe(command)
    service = build_proxy_service(config, transport="http", target=name)
    app = build_front(service, Bridge(service, command), target=name)
    run_http(app, config, service.logger, ready_file=ready_file, overridden=overridden, auth_warning=auth_warning,
             name=f"mcptrace {__version__} proxy for {name},", fields={f.TARGET: name})
    return 0
