"""Real nginx and Caddy in front of a test server, configured from the files in `deploy/`.

The shipped configurations are rendered for the test: their public listener
moves to a free loopback port, their certificate paths point at a certificate
made for the test, and their upstream at the test server. Everything else is
the file as shipped, so what the tests prove is what users deploy.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcptrace.testing import stop_process

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SHIPPED_CERT = "/etc/ssl/mcptrace/fullchain.pem"
SHIPPED_KEY = "/etc/ssl/mcptrace/privkey.pem"
SHIPPED_UPSTREAM = "127.0.0.1:8765"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Proxy:
    url: str  # the MCP endpoint through the proxy
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, valid for two days."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Certificate(cert, key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (scripts/test.sh installs it)")
    return path


def render(text: str, *, listener: tuple[str, str], cert: Certificate, upstream: str) -> str:
    """The shipped text with its listener, certificate and upstream swapped for the test's."""
    for shipped in (listener[0], SHIPPED_CERT, SHIPPED_KEY, SHIPPED_UPSTREAM):
        assert shipped in text, f"the shipped configuration no longer contains {shipped!r}"
    return (
        text.replace(*listener)
        .replace(SHIPPED_CERT, str(cert.cert))
        .replace(SHIPPED_KEY, str(cert.key))
        .replace(SHIPPED_UPSTREAM, upstream)
    )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], stderr: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited {proc.returncode}: {stderr.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"proxy not listening in {timeout}s: {stderr.read_text(errors='replace')}"
                ) from None
            time.sleep(0.05)


@contextmanager
def _run(cmd: list[str], port: int, workdir: Path, env: dict[str, str] | None = None) -> Iterator[Path]:
    stderr = workdir / "stderr.txt"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=workdir)
    try:
        _wait_for_port(port, proc, stderr)
        yield stderr
    finally:
        stop_process(proc, timeout=10)


@contextmanager
def running_nginx(
    workdir: Path, *, server_url: str, cert: Certificate, site: str | None = None
) -> Iterator[Proxy]:
    """nginx in the foreground with its own prefix; `site` replaces the shipped server block."""
    port = free_port()
    upstream = server_url.removeprefix("http://").split("/")[0]
    text = site if site is not None else (DEPLOY / "nginx" / "mcptrace.conf").read_text()
    rendered = render(text, listener=("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"), cert=cert,
                      upstream=upstream)
    with _nginx(workdir, rendered, port) as proxy:
        yield proxy


@contextmanager
def _nginx(workdir: Path, site: str, port: int) -> Iterator[Proxy]:
    """nginx serving `site` (listening on `port`) in the foreground, everything under `workdir`."""
    binary = require("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "site.conf").write_text(site)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
        (workdir / sub).mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (workdir / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {workdir}/nginx.pid;\nerror_log stderr warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {workdir}/client_body;\n"
        f"  proxy_temp_path {workdir}/proxy;\n  fastcgi_temp_path {workdir}/fastcgi;\n"
        f"  uwsgi_temp_path {workdir}/uwsgi;\n  scgi_temp_path {workdir}/scgi;\n"
        f"  include {workdir}/site.conf;\n"
        "}\n"
    )
    cmd = [binary, "-e", "stderr", "-p", str(workdir), "-c", str(workdir / "nginx.conf")]
    with _run(cmd, port, workdir) as stderr:
        yield Proxy(f"https://127.0.0.1:{port}/mcp", stderr)


@contextmanager
def running_caddy(workdir: Path, *, server_url: str, cert: Certificate) -> Iterator[Proxy]:
    """Caddy in the foreground, admin API off, its state under `workdir`."""
    binary = require("caddy")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    upstream = server_url.removeprefix("http://").split("/")[0]
    site = render(
        (DEPLOY / "caddy" / "Caddyfile").read_text(),
        listener=("mcp.example.com {", f"https://127.0.0.1:{port} {{"),
        cert=cert,
        upstream=upstream,
    )
    config = workdir / "Caddyfile"
    config.write_text("{\n\tadmin off\n\tauto_https disable_redirects\n}\n\n" + site)
    env = {
        **os.environ,
        "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
    }
    cmd = [binary, "run", "--config", str(config), "--adapter", "caddyfile"]
    with _run(cmd, port, workdir, env=env) as stderr:
        yield Proxy(f"https://127.0.0.1:{port}/mcp", stderr)


BALANCER_SITE = """
upstream mcptrace_replicas {{
{servers}
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://mcptrace_replicas;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # The replicas accept loopback Host headers only (DNS-rebinding protection).
        proxy_set_header Host 127.0.0.1:8765;
        proxy_set_header X-Request-ID $request_id;
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_read_timeout 300s;
    }}
}}
"""


@contextmanager
def running_balancer(workdir: Path, ports: list[int]) -> Iterator[str]:
    """nginx round-robining plain HTTP over replicas on loopback `ports`; yields its MCP endpoint."""
    binary = require("nginx")
    port = free_port()
    for sub in ("client_body", "proxy", "logs"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    servers = "\n".join(f"    server 127.0.0.1:{p};" for p in ports)
    (workdir / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {workdir}/nginx.pid;\nerror_log stderr warn;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {workdir}/client_body;\n"
        f"  proxy_temp_path {workdir}/proxy;\n"
        + BALANCER_SITE.format(servers=servers, port=port) + "}\n"
    )
    with _run([binary, "-e", "stderr", "-p", str(workdir), "-c", str(workdir / "nginx.conf")], port, workdir):
        yield f"http://127.0.0.1:{port}/mcp"

#: The replicas the shipped replica configurations name, in order.
SHIPPED_REPLICAS = ("127.0.0.1:8765", "127.0.0.1:8766")


def render_replicas(text: str, *, listener: tuple[str, str], cert: Certificate, upstreams: list[str]) -> str:
    """A shipped replica configuration with its listener, certificate and replica addresses swapped."""
    for shipped in (listener[0], SHIPPED_CERT, SHIPPED_KEY, *SHIPPED_REPLICAS):
        assert shipped in text, f"the shipped configuration no longer contains {shipped!r}"
    text = text.replace(*listener).replace(SHIPPED_CERT, str(cert.cert)).replace(SHIPPED_KEY, str(cert.key))
    for shipped, upstream in zip(SHIPPED_REPLICAS, upstreams, strict=True):
        text = text.replace(shipped, upstream)
    return text


@contextmanager
def running_nginx_replicas(workdir: Path, *, server_urls: list[str], cert: Certificate) -> Iterator[Proxy]:
    """nginx with `deploy/nginx/mcptrace-replicas.conf` in front of two replicas (ids r1 and r2)."""
    port = free_port()
    site = render_replicas(
        (DEPLOY / "nginx" / "mcptrace-replicas.conf").read_text(),
        listener=("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"), cert=cert,
        upstreams=[u.removeprefix("http://").split("/")[0] for u in server_urls],
    )
    with _nginx(workdir, site, port) as proxy:
        yield proxy


@contextmanager
def running_caddy_replicas(workdir: Path, *, server_urls: list[str], cert: Certificate) -> Iterator[Proxy]:
    """Caddy with `deploy/caddy/Caddyfile.replicas` in front of two replicas (ids r1 and r2)."""
    binary = require("caddy")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = render_replicas(
        (DEPLOY / "caddy" / "Caddyfile.replicas").read_text(),
        listener=("mcp.example.com {", f"https://127.0.0.1:{port} {{"), cert=cert,
        upstreams=[u.removeprefix("http://").split("/")[0] for u in server_urls],
    )
    config = workdir / "Caddyfile"
    config.write_text("{\n\tadmin off\n\tauto_https disable_redirects\n}\n\n" + site)
    env = {**os.environ, "HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "data"),
           "XDG_CONFIG_HOME": str(workdir / "config")}
    validated = subprocess.run([binary, "validate", "--config", str(config), "--adapter", "caddyfile"],
                               capture_output=True, text=True, env=env, cwd=workdir, timeout=60)
    assert validated.returncode == 0, validated.stderr[-2000:]
    cmd = [binary, "run", "--config", str(config), "--adapter", "caddyfile"]
    with _run(cmd, port, workdir, env=env) as stderr:
        yield Proxy(f"https://127.0.0.1:{port}/mcp", stderr)
