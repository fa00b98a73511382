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
import shutil
import subprocess
from pathlib import Path

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


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes(conformance: Path, server: RunningProcess, scenario: str, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    done = subprocess.run(
        [str(conformance), "server", "--url", server.url, "--scenario", scenario, "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    [checks_file] = tmp_path.glob("*/checks.json")
    checks = json.loads(checks_file.read_text())
    failed = [(c["id"], c.get("errorMessage")) for c in checks if c["status"] not in ("SUCCESS", "WARNING")]
    assert checks and not failed, failed
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
