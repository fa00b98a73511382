"""`mcptrace report`: one self-contained HTML page of the incident figures, and PNGs of them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcptrace.testing import subprocess_env
from tests.notebook_helpers import SAMPLE_LOGS

Report = tuple[Path, subprocess.CompletedProcess[str]]
FIGURES = {"errors", "latency", "callers", "loops", "runs", "sessions", "request-1", "request-2", "request-3"}


def mcptrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcptrace", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=cwd,
        timeout=240,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("report")
    result = mcptrace("report", str(SAMPLE_LOGS), "-o", "incident.html", "--png", "png", cwd=out)
    return out, result


def test_report_is_one_page_with_plotly_embedded_once(report: Report) -> None:
    out, result = report
    assert result.returncode == 0, result.stderr
    page = (out / "incident.html").read_text()
    assert page.count("plotly.js v") == 1  # the library's banner, inlined once
    assert "<script src=" not in page  # nothing fetched from the network
    assert set(re.findall(r'id="fig-([\w-]+)"', page)) == FIGURES
    assert "agent-triage" in page and "HTTP 503" in page


def test_png_export_writes_every_figure(report: Report) -> None:
    out, result = report
    assert result.returncode == 0, result.stderr
    pngs = {p.stem: p for p in (out / "png").glob("*.png")}
    assert set(pngs) == FIGURES
    for path in pngs.values():
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, path


def test_missing_logs_are_a_clear_error(tmp_path: Path) -> None:
    result = mcptrace("report", "no-such-dir", "-o", "r.html", cwd=tmp_path)
    assert result.returncode == 2
    assert "log file not found: no-such-dir" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.html").exists()


def test_a_bad_bucket_size_is_a_clear_error(tmp_path: Path) -> None:
    result = mcptrace("report", str(SAMPLE_LOGS), "--every", "5 minutes", "-o", "r.html", cwd=tmp_path)
    assert result.returncode == 2
    assert "--every: not a duration: '5 minutes'" in result.stderr and "Traceback" not in result.stderr
