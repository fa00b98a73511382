"""`mcptrace proxy`: mcptrace's logs, guards and telemetry in front of any MCP server."""

from __future__ import annotations

import argparse

from mcptrace._errors import ConfigError
from mcptrace.cli._options import add_server_options, parse_seconds, server_config

_EPILOG = """\
modes:
  mcptrace proxy -- CMD [ARGS...]          wrap a stdio server (an MCP client starts this instead of CMD)
  mcptrace proxy --target URL              Streamable HTTP reverse proxy in front of an HTTP server
  mcptrace proxy --http -- CMD [ARGS...]   serve a stdio server over Streamable HTTP, with auth and limits
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = sub.add_parser(
        "proxy", help="stand in front of any MCP server (stdio or HTTP) with mcptrace's logs, guards and telemetry",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    proxy.add_argument("--target", metavar="URL", help="the Streamable HTTP endpoint of the server to proxy")
    proxy.add_argument("--http", action="store_true",
                       help="serve the stdio server CMD over Streamable HTTP (on --host/--port)")
    add_server_options(proxy)
    proxy.add_argument("--request-timeout", type=parse_seconds, metavar="DURATION",
                       help="time the server has to answer a request (30s, 5m; a bare number is seconds; default 5m)")
    proxy.add_argument("--target-max-message-bytes", type=int, metavar="BYTES",
                       help="largest message accepted from the server (default 16 MiB)")
    proxy.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]",
                       help="the stdio server to start")
    proxy.set_defaults(func=_proxy)


def _proxy(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.target and command:
        raise ConfigError("give either --target URL or -- CMD, not both")
    if not args.target and not command:
        raise ConfigError("nothing to proxy: give -- CMD [ARGS...] (a stdio server) or --target URL")
    config = server_config(
        args, request_timeout=args.request_timeout, target_max_message_bytes=args.target_max_message_bytes,
    )
    if args.target:
        from mcptrace.proxy._run import serve_http_target

        return serve_http_target(config, args.target, ready_file=args.ready_file)
    if args.http:
        from mcptrace.proxy._run import serve_bridge

        return serve_bridge(config, command, ready_file=args.ready_file)
    from mcptrace.proxy._run import serve_stdio_target

    return serve_stdio_target(config, command, ready_file=args.ready_file)
