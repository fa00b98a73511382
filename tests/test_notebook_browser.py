"""The investigation notebook in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium, playwright-core.

The notebook is run from a scratch copy (JupyterLab autosaves), all cells are
executed through the Lab UI, and the test checks what the page shows: the
plotly figures are drawn, and typing a request id into the explorer redraws
its waterfall. Screenshots land in test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import polars as pl
import pytest

import mcptrace.notebook as nb
from mcptrace.testing import stop_process, subprocess_env
from tests.notebook_helpers import ROOT, SAMPLE_LOGS

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "browser"
NOTEBOOK = "notebooks/incident-investigation.ipynb"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (BROWSER_DIR / "node_modules" / "playwright-core").exists(),
        reason="playwright-core not installed (scripts/test.sh installs it)",
    ),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="chromium not installed (scripts/test.sh installs it)"
    ),
    pytest.mark.skipif(shutil.which("node") is None, reason="node not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 without a token, serving a scratch copy of the notebooks."""
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    shutil.copy(ROOT / NOTEBOOK, root / NOTEBOOK)
    (root / "sample_logs").symlink_to(ROOT / "sample_logs")
    # the news pop-up would sit over the page in every screenshot
    labconfig = root / ".config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    port = _free_port()
    env = subprocess_env(
        {
            "JUPYTER_CONFIG_DIR": str(root / ".config"),
            "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"),
        }
    )
    log = open(root / "lab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.workspaces_dir={root / '.workspaces'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyterlab exited {proc.returncode}: {(root / 'lab.log').read_text()}")
            try:
                if httpx.get(f"{url}/api/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyterlab not up in 90 s: {(root / 'lab.log').read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        stop_process(proc, timeout=15)
        log.close()


@pytest.fixture(scope="module")
def page(lab: str) -> dict[str, object]:
    """Run the notebook in Chromium once; the tests below read what the page showed."""
    calls = nb.tool_calls(nb.load_logs(SAMPLE_LOGS))
    request_id = calls.filter(pl.col("failed") & (pl.col("tool_name") == "fetch_upstream"))["mcp_request_id"][
        -1
    ]
    SHOTS.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["node", str(BROWSER_DIR / "run_notebook.mjs"), lab, NOTEBOOK, str(SHOTS), request_id],
        capture_output=True,
        text=True,
        timeout=420,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert "failure" not in result, f"{result['failure']}\n{done.stderr}"
    result["request_id"] = request_id
    return result


def test_every_cell_runs_and_the_findings_are_printed(page: dict[str, object]) -> None:
    assert page["tracebacks"] == 0
    findings = "".join(page["findings"])  # type: ignore[arg-type]
    assert "upstream_outage" in findings and "agent-triage" in findings


def test_plotly_figures_render_in_the_page(page: dict[str, object]) -> None:
    assert page["figures"] >= 8  # type: ignore[operator]
    titles = " | ".join(page["figureTitles"])  # type: ignore[arg-type]
    for title in (
        "Error rate by tool",
        "Tool latency percentiles",
        "Call chain",
        "Loop episode",
        "Agent runs",
    ):
        assert title in titles, titles


def test_typing_a_request_id_redraws_the_explorer(page: dict[str, object]) -> None:
    before = page["explorerTitlesBefore"]
    after = page["explorerTitlesAfter"]
    expected = f"Call chain {page['request_id']}"
    assert expected not in before and expected in after  # type: ignore[operator]
    assert "fetch_upstream" in page["explorerText"]  # type: ignore[operator]
    assert (SHOTS / "explorer.png").stat().st_size > 10_000
