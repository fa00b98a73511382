"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`) against `mcptrace serve`.

Only the scenarios that apply to any server run here: the others drive
purpose-built test tools, prompts and resources (`test_simple_text`,
`test_reconnection`, ...) that a production server does not ship.
`scripts/install-conformance.sh` installs the suite and its Node 22 into
`.ci/node/`; this test runs that script too, so it works from a fresh clone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mcptrace.testing import RunningProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".ci" / "node" / "node_modules" / ".bin"

#: Scenarios that apply to any MCP server; the README lists the same ones.
SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-error",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]


@pytest.fixture(scope="module")
def conformance() -> Path:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the MCP conformance suite is an npm package (apt-get install npm)")
    subprocess.run(["bash", str(ROOT / "scripts" / "install-conformance.sh")], check=True, timeout=600)
    return BIN / "conformance"


@pytest.fixture(scope="module")
def results(
    conformance: Path, server: RunningProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    """One run of the suite's server scenarios (one Node start, not one per scenario): checks by scenario."""
    out = tmp_path_factory.mktemp("conformance")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    subprocess.run(
        [str(conformance), "server", "--url", server.url, "-o", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # the exit status counts the scenarios that do not apply; each one that does is checked below
    found: dict[str, list[dict[str, Any]]] = {}
    for checks in out.glob("server-*/checks.json"):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T.*$", "", checks.parent.name.removeprefix("server-"))
        found[scenario] = json.loads(checks.read_text())
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes(results: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    checks = results.get(scenario)
    assert checks, f"the suite did not run {scenario}; it ran {sorted(results)}"
    failed = [(c["id"], c.get("errorMessage")) for c in checks if c["status"] not in ("SUCCESS", "WARNING")]
    assert not failed, failed
