"""`mcptrace serve` and `mcptrace upstream`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mcptrace.cli._options import add_server_options, server_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the bundled production MCP server")
    add_server_options(serve)
    serve.add_argument("--stateless", action="store_true", default=None, help="stateless Streamable HTTP")
    serve.add_argument("--stdio", action="store_true", help="serve JSON-RPC on stdin/stdout instead of HTTP")
    serve.add_argument("--upstream-url", help="base URL of the API behind fetch_upstream")
    serve.add_argument("--resources-manifest", type=Path,
                       help="load the hash-pinned remote tools and prompts listed in this manifest")
    serve.set_defaults(func=_serve)

    upstream = sub.add_parser("upstream", help="run the demo upstream HTTP API with switchable faults")
    upstream.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only; default 127.0.0.1)")
    upstream.add_argument("--port", type=int, default=8766, help="port to bind (default 8766; 0 picks a free one)")
    upstream.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer, in milliseconds")
    upstream.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 500 (0 to 1)")
    upstream.add_argument("--ready-file", type=Path, help="write the URL to this file once it accepts requests")
    upstream.set_defaults(func=_upstream)


def _serve(args: argparse.Namespace) -> int:
    from mcptrace.server._run import serve_http, serve_stdio

    config = server_config(
        args, stateless=args.stateless, upstream_url=args.upstream_url, resources_manifest=args.resources_manifest,
    )
    if args.stdio:
        serve_stdio(config)
    else:
        serve_http(config, ready_file=args.ready_file)
    return 0


def _upstream(args: argparse.Namespace) -> int:
    import sys

    import uvicorn

    from mcptrace.server._bind import check_bind
    from mcptrace.server._run import bind_socket
    from mcptrace.server._upstream import Faults, upstream_app

    check_bind(args.host, allow_non_loopback=False)
    sock = bind_socket(args.host, args.port)
    url = f"http://{args.host}:{sock.getsockname()[1]}"
    app = upstream_app(Faults(latency_ms=args.latency_ms, fail_rate=args.fail_rate))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    print(f"mcptrace upstream: serving {url}", file=sys.stderr, flush=True)
    if args.ready_file:
        from mcptrace.server._run import _announce_when_started

        _announce_when_started(server, args.ready_file, url)
    server.run(sockets=[sock])
    return 0
