"""Export spans from the real `mcptrace serve` to arize-phoenix over gRPC and OTLP/HTTP, then read them back.

    python tests/phoenix_scenario.py PHOENIX_EXECUTABLE OUT.json

Run inside a network namespace of its own (`unshare -n`, loopback up): phoenix's
gRPC receiver binds every interface, and in a fresh namespace that is loopback
alone. For each protocol the server exports to its own phoenix project (set
through `OTEL_RESOURCE_ATTRIBUTES`); the script makes a successful call and a
failing one and writes the request ids and the spans phoenix stored to OUT.json.
`tests/test_otel_phoenix.py` makes the assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcptrace.testing import running_server, stop_process  # noqa: E402
from tests.otel_receivers import free_port  # noqa: E402

PROTOCOLS = {"grpc": "grpc", "http": "http/protobuf"}


def start_phoenix(executable: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(http_port),
           "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_WORKING_DIR": str(workdir)}
    log = open(workdir / "phoenix.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([executable, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (workdir / "phoenix.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"phoenix exited with {proc.returncode}: {tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).status_code == 200:
                return proc, http_port, grpc_port
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("phoenix did not become healthy within 180 s")


async def make_calls(url: str) -> dict[str, str]:
    with anyio.fail_after(60):
        async with Client(url, mode="legacy") as client:
            ok = await client.call_tool("search_database", {"query": "anvil", "limit": 1})
            failed = await client.call_tool("no_such_tool", {})
    assert not ok.is_error and failed.is_error
    return {"ok": ok.meta["mcptrace/mcp_request_id"], "failed": failed.meta["mcptrace/mcp_request_id"]}


def stored_spans(http_port: int, project: str, wanted: set[str], timeout: float = 60) -> list[dict[str, Any]]:
    """Spans phoenix stored for `project`, once spans carrying every wanted request id are there."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        response = httpx.get(f"http://127.0.0.1:{http_port}/v1/projects/{project}/spans/otlpv1",
                             params={"limit": 1000}, timeout=10)
        if response.status_code == 200:
            spans = response.json()["data"]
            if wanted <= set(json.dumps(spans).split('"')):
                return spans
        time.sleep(0.5)
    return spans


def main() -> int:
    executable, out = sys.argv[1], Path(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="mcptrace-phoenix-") as tmp:
        workdir = Path(tmp)
        phoenix, http_port, grpc_port = start_phoenix(executable, workdir)
        result: dict[str, Any] = {}
        try:
            for name, protocol in PROTOCOLS.items():
                port = grpc_port if name == "grpc" else http_port
                project = f"mcptrace-{name}"
                env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                       "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_SERVICE_NAME": project,
                       "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
                       "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "100"}
                server_dir = workdir / name
                server_dir.mkdir()
                with running_server(server_dir, env=env) as server:
                    ids = anyio.run(make_calls, server.url)
                    spans = stored_spans(http_port, project, set(ids.values()))
                result[name] = {"request_ids": ids, "spans": spans}
        finally:
            stop_process(phoenix, timeout=20)
    out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
