"""`mcptrace serve` and `mcptrace upstream`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the bundled production MCP server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8765; 0 picks a free one)")
    serve.add_argument("--log-file", type=Path, help="JSON log file (default .mcptrace/logs/mcptrace.log)")
    serve.add_argument("--log-stderr", action="store_true", default=None, help="also write JSON lines to stderr")
    serve.add_argument("--stateless", action="store_true", default=None, help="stateless Streamable HTTP")
    serve.add_argument("--stdio", action="store_true", help="serve JSON-RPC on stdin/stdout instead of HTTP")
    serve.add_argument("--data-dir", type=Path, help="database and default log directory")
    serve.add_argument("--upstream-url", help="base URL of the API behind fetch_upstream")
    serve.add_argument("--max-body-bytes", type=int, help="largest request body (default 1 MiB)")
    serve.add_argument("--log-max-bytes", type=int, help="rotate the log file at this size (default 100 MiB)")
    serve.add_argument("--log-backups", type=int, help="rotated log files to keep (default 10)")
    serve.add_argument("--allow-non-loopback", action="store_true", default=None,
                       help="bind a non-loopback address anyway (logged as a warning at every start)")
    guards = serve.add_argument_group("auth and rate limits")
    guards.add_argument("--tokens", type=Path, help="token store; requires bearer tokens")
    guards.add_argument("--jwks", help="JWKS file or URL of the OAuth issuer; accepts JWT access tokens")
    guards.add_argument("--issuer", help="required `iss` of JWT access tokens")
    guards.add_argument("--audience", help="required `aud` of JWT access tokens")
    guards.add_argument("--redis-url", help="share rate limits, suspensions and revocations through Redis")
    guards.add_argument("--replica-id", help="this replica's name behind a proxy: its session ids start with it")
    guards.add_argument("--rate-limit-caller", metavar="RATE/BURST", help="per-caller bucket")
    guards.add_argument("--rate-limit-tools", metavar="TOOL=RATE/BURST,...",
                        help="per (caller, tool) buckets; `*` sets the default")
    guards.add_argument("--suspend-after", type=int, help="violations that suspend a caller")
    guards.add_argument("--suspend-seconds", type=float, help="how long a suspension lasts")
    serve.add_argument("--resources-manifest", type=Path,
                       help="load the hash-pinned remote tools and prompts listed in this manifest")
    serve.add_argument("--ready-file", type=Path, help="write the server URL to this file once it accepts requests")
    serve.set_defaults(func=_serve)

    upstream = sub.add_parser("upstream", help="run the demo upstream HTTP API with switchable faults")
    upstream.add_argument("--host", default="127.0.0.1")
    upstream.add_argument("--port", type=int, default=8766)
    upstream.add_argument("--latency-ms", type=float, default=0.0)
    upstream.add_argument("--fail-rate", type=float, default=0.0)
    upstream.add_argument("--ready-file", type=Path)
    upstream.set_defaults(func=_upstream)


def _serve(args: argparse.Namespace) -> int:
    from mcptrace._config import Config
    from mcptrace.server._run import serve_http, serve_stdio

    config = Config.from_env(
        host=args.host, port=args.port, log_file=args.log_file, log_stderr=args.log_stderr,
        stateless=args.stateless, data_dir=args.data_dir, upstream_url=args.upstream_url,
        max_body_bytes=args.max_body_bytes, allow_non_loopback=args.allow_non_loopback,
        log_max_bytes=args.log_max_bytes, log_backups=args.log_backups,
        tokens_file=args.tokens, jwks=args.jwks, jwt_issuer=args.issuer, jwt_audience=args.audience,
        redis_url=args.redis_url, replica_id=args.replica_id, rate_limit_caller=args.rate_limit_caller,
        rate_limit_tools=args.rate_limit_tools, suspend_after=args.suspend_after,
        suspend_seconds=args.suspend_seconds,
        resources_manifest=args.resources_manifest,
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
