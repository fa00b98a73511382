"""The processes behind `mcptrace.testing`: the real server, upstream and proxy on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcptrace._process import RunningProcess, running


@contextmanager
def running_server(workdir: Path, *extra_args: str, env: dict[str, str] | None = None) -> Iterator[RunningProcess]:
    """The real `mcptrace serve` on 127.0.0.1 and a free port, data and logs under `workdir`."""
    with running(["serve", "--port", "0", "--data-dir", str(workdir), *extra_args], workdir, env=env) as proc:
        yield proc


@contextmanager
def running_upstream(workdir: Path, *extra_args: str) -> Iterator[RunningProcess]:
    """The demo upstream API on 127.0.0.1 and a free port."""
    with running(["upstream", "--port", "0", *extra_args], workdir) as proc:
        yield proc


@contextmanager
def running_proxy(
    workdir: Path, *extra_args: str, target: str | None = None, command: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[RunningProcess]:
    """The real `mcptrace proxy` on 127.0.0.1 and a free port, in front of `target` (a URL) or, served over
    HTTP, the stdio server `command`; logs under `workdir`."""
    args = ["proxy", "--port", "0", "--data-dir", str(workdir), *extra_args]
    if target is not None:
        args += ["--target", target]
    else:
        args.append("--http")
    with running(args, workdir, env=env, trailing=["--", *command] if command else ()) as proc:
        yield proc


def initialize_message(client_name: str, *, protocol_version: str = "2025-11-25", msg_id: int = 1) -> dict[str, Any]:
    """A raw JSON-RPC `initialize` request, for tests and probes that speak HTTP without the SDK client."""
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "initialize",
        "params": {
            "protocolVersion": protocol_version,
            "capabilities": {},
            "clientInfo": {"name": client_name, "version": "1"},
        },
    }
