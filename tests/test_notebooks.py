"""The notebooks run top to bottom on the sample logs and reach the root causes that were planted."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from mcptrace.testing import subprocess_env
from tests.notebook_helpers import ROOT, planted

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def execute(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    path = ROOT / "notebooks" / name
    notebook = nbformat.read(path, as_version=4)
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])  # the kernel imports this checkout
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook


def tagged_output(notebook: Any, tag: str) -> str:
    cell = next(c for c in notebook.cells if tag in c.metadata.get("tags", []))
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture(scope="module")
def investigation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return execute("incident-investigation.ipynb", monkeypatch)


def test_investigation_finds_the_five_planted_root_causes(investigation: Any) -> None:
    findings = json.loads(tagged_output(investigation, "findings"))
    truth = planted()
    slack = timedelta(seconds=5)

    outage = findings["upstream_outage"]
    assert outage["downstream_error"] == "HTTP 503" and "fetch_upstream" in outage["tools"]
    assert truth["upstream_outage"]["start"] <= _time(outage["start"])
    assert _time(outage["end"]) <= truth["upstream_outage"]["end"] + slack

    slow = findings["slow_tool"]
    assert slow["tool"] == truth["slow_tool"]["tool_name"] and slow["service"] == "upstream"
    assert slow["slowest_ms"] >= truth["slow_tool"]["upstream_latency_ms"]
    assert truth["slow_tool"]["start"] - slack <= _time(slow["start"]) <= truth["slow_tool"]["end"]

    auth = findings["auth_failures"]
    assert auth["caller_id"] == truth["auth_failures"]["caller_id"] and auth["http_status"] == 401
    assert truth["auth_failures"]["start"] <= _time(auth["start"]) <= truth["auth_failures"]["end"]

    loop = findings["agent_loop"]
    assert loop["caller_id"] == truth["agent_loop"]["caller_id"]
    assert loop["tool_name"] == truth["agent_loop"]["tool_name"]
    assert loop["kind"] == "repeat" and loop["calls"] >= 30

    storm = findings["rate_limit_storm"]
    assert storm["caller_id"] == truth["rate_limit_storm"]["caller_id"]
    assert storm["refused"] > storm["served"]
    assert truth["rate_limit_storm"]["start"] <= _time(storm["start"]) <= truth["rate_limit_storm"]["end"]


def test_investigation_draws_every_figure_without_errors(investigation: Any) -> None:
    outputs = [o for c in investigation.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert len(figures) >= 8
    titles = {json.dumps(o["data"][PLOTLY_MIME]["layout"].get("title", {}).get("text")) for o in figures}
    assert any("Call chain" in t for t in titles) and any("Loop episode" in t for t in titles)


def test_traces_and_logs_join_on_trace_id_and_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = execute("traces-and-logs.ipynb", monkeypatch)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    findings = json.loads(tagged_output(notebook, "findings"))
    assert findings["lines_in_requests"] > 1000
    assert findings["lines_joined_to_a_span"] == findings["lines_in_requests"]
    assert findings["request_ids_agree"] is True
    assert "request_refused" in findings["refusals_only_in_logs"]
    assert findings["outage_request"]["span_error_type"] == "HTTP 503"
    assert len(findings["outage_request"]["trace_id"]) == 32
    # every CLIENT span against its downstream_call line, call by call
    assert 0 <= findings["max_client_span_minus_line_ms"] < 1.0
