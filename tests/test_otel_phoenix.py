"""Spans reach arize-phoenix, a third-party OTLP receiver, over both gRPC and OTLP/HTTP.

Phoenix lives in a virtual environment of its own (`scripts/test.sh` installs it
under `.ci/phoenix`; `MCPTRACE_PHOENIX` names another executable) so that its
dependencies never touch the package's. Its gRPC port binds every interface,
so phoenix, the server and the client all run in a fresh network namespace
where the only interface is loopback (`tests/phoenix_scenario.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHOENIX = Path(os.environ.get("MCPTRACE_PHOENIX", ROOT / ".ci" / "phoenix" / "bin" / "phoenix"))
STATUS_ERROR = 2  # OTLP's Status.StatusCode.STATUS_CODE_ERROR

pytestmark = pytest.mark.skipif(not PHOENIX.exists(), reason=f"arize-phoenix is not installed at {PHOENIX}")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What phoenix stored, per protocol: the request ids of the calls made and the spans."""
    assert shutil.which("unshare") and shutil.which("ip"), "needs util-linux's unshare and iproute2's ip"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"this machine allows no network namespace of our own: {probe.stderr.strip()}")
    out = tmp_path_factory.mktemp("phoenix") / "stored.json"
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
               sys.executable, str(ROOT / "tests" / "phoenix_scenario.py"), str(PHOENIX), str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next((v for v in a["value"].values() if v is not None), None) for a in span["attributes"]}


def span_of(spans: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    found = [s for s in spans if attributes(s).get("mcptrace.mcp_request_id") == request_id]
    assert len(found) == 1, f"{len(found)} spans carry {request_id}"
    return found[0]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_request_span_arrives_with_its_request_id_and_the_tool(stored: dict[str, Any], protocol: str) -> None:
    run = stored[protocol]
    span = span_of(run["spans"], run["request_ids"]["ok"])
    assert span["name"] == "tools/call search_database"
    assert attributes(span)["gen_ai.tool.name"] == "search_database"
    assert span["parent_span_id"] is None
    assert span["status"]["code"] != STATUS_ERROR


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_database_call_is_a_child_in_the_same_trace(stored: dict[str, Any], protocol: str) -> None:
    run = stored[protocol]
    parent = span_of(run["spans"], run["request_ids"]["ok"])
    children = [s for s in run["spans"] if s["parent_span_id"] == parent["span_id"]]
    assert [c["name"] for c in children] == ["sqlite"]
    child = children[0]
    assert child["trace_id"] == parent["trace_id"]
    assert attributes(child)["peer.service"] == "sqlite"
    assert parent["start_time_unix_nano"] <= child["start_time_unix_nano"] <= child["end_time_unix_nano"]
    assert child["end_time_unix_nano"] <= parent["end_time_unix_nano"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_failed_call_arrives_with_error_status(stored: dict[str, Any], protocol: str) -> None:
    run = stored[protocol]
    span = span_of(run["spans"], run["request_ids"]["failed"])
    assert span["status"]["code"] == STATUS_ERROR
    assert attributes(span)["error.type"] == "tool_error"
