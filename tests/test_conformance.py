"""The official MCP conformance suite (npm `@modelcontextprotocol/conformance`) against `mcptrace serve`,
and against npm's server-everything directly and through `mcptrace proxy`.

For serve, only the scenarios that apply to any server are checked: the others drive
purpose-built test tools, prompts and resources (`test_simple_text`,
`test_reconnection`, ...) that a production server does not ship. For the proxy, the
rule is relative: every scenario server-everything passes directly passes through the
reverse proxy in front of its Streamable HTTP transport, and through the bridge that
serves its stdio transport over HTTP.
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

from mcptrace.testing import RunningProcess, running_proxy
from tests.helpers import UNLIMITED
from tests.proxy_targets import everything_command, everything_http

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


def run_suite(conformance: Path, url: str, out: Path) -> dict[str, list[dict[str, Any]]]:
    """One run of the suite's server scenarios (one Node start, not one per scenario): checks by scenario."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    subprocess.run(
        [str(conformance), "server", "--url", url, "-o", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # the exit status counts the scenarios that do not apply; each one that does is checked below
    found: dict[str, list[dict[str, Any]]] = {}
    for checks in out.glob("server-*/checks.json"):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T.*$", "", checks.parent.name.removeprefix("server-"))
        found[scenario] = json.loads(checks.read_text())
    return found


def failures(checks: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(c["id"], c.get("errorMessage")) for c in checks if c["status"] not in ("SUCCESS", "WARNING", "INFO")]


@pytest.fixture(scope="module")
def results(
    conformance: Path, server: RunningProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[dict[str, Any]]]:
    return run_suite(conformance, server.url, tmp_path_factory.mktemp("conformance"))


@pytest.fixture(scope="module")
def everything_results(
    conformance: Path, tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The suite against server-everything directly, through the reverse proxy and through the bridge.

    The proxies run without rate limits: the suite is one fast caller, and limits are not under test here.
    """
    with everything_http(tmp_path_factory.mktemp("everything")) as url, running_proxy(
        tmp_path_factory.mktemp("proxy"), *UNLIMITED, target=url,
    ) as proxy, running_proxy(tmp_path_factory.mktemp("bridge"), *UNLIMITED, command=everything_command()) as bridge:
        return {
            name: run_suite(conformance, target, tmp_path_factory.mktemp(f"conformance-{name}"))
            for name, target in (("direct", url), ("proxy", proxy.url), ("bridge", bridge.url))
        }


def test_server_everything_passes_the_core_scenarios_directly(
    everything_results: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    """What the proxy tests stand on: the suite really ran, and the server passes its basics."""
    direct = {s for s, checks in everything_results["direct"].items() if checks and not failures(checks)}
    assert {"server-initialize", "ping", "tools-list", "tools-call-simple-text", "resources-list",
            "prompts-list", "logging-set-level", "server-sse-multiple-streams"} <= direct


@pytest.mark.parametrize("mode", ["proxy", "bridge"])
def test_every_scenario_server_everything_passes_passes_through_the_proxy(
    everything_results: dict[str, dict[str, list[dict[str, Any]]]], mode: str,
) -> None:
    direct = everything_results["direct"]
    through = everything_results[mode]
    lost = {
        scenario: failures(through.get(scenario, [])) or "not run"
        for scenario, checks in direct.items()
        if checks and not failures(checks) and (not through.get(scenario) or failures(through[scenario]))
    }
    assert not lost, lost


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes(results: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    checks = results.get(scenario)
    assert checks, f"the suite did not run {scenario}; it ran {sorted(results)}"
    assert not failures(checks), failures(checks)
