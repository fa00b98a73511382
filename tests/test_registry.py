"""`mcptrace registry update`: the entry changes only when the gate passes against its URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcptrace.cli import main
from mcptrace.testing import RunningProcess
from tests.test_gate import dead_url


def update(registry: Path, name: str, url: str) -> int:
    return main(["registry", "update", str(registry), "--name", name, "--url", url, "--timeout", "10"])


def test_a_passing_gate_adds_the_entry(server: RunningProcess, tmp_path: Path) -> None:
    registry = tmp_path / "mcp.json"
    assert update(registry, "mcptrace", server.url) == 0
    assert json.loads(registry.read_text()) == {
        "mcpServers": {"mcptrace": {"type": "http", "url": server.url}}
    }


def test_a_change_keeps_everything_else(
    server: RunningProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "mcp.json"
    registry.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "mcptrace": {
                        "type": "http",
                        "url": "https://old.example.com/mcp",
                        "headers": {"X-Team": "ops"},
                    },
                    "other": {"command": "other-server", "args": ["--stdio"]},
                },
                "inputs": [{"id": "token"}],
            }
        )
    )
    assert update(registry, "mcptrace", server.url) == 0
    data = json.loads(registry.read_text())
    assert data["mcpServers"]["mcptrace"] == {"type": "http", "url": server.url, "headers": {"X-Team": "ops"}}
    assert data["mcpServers"]["other"] == {"command": "other-server", "args": ["--stdio"]}
    assert data["inputs"] == [{"id": "token"}]
    assert "changed mcptrace" in capsys.readouterr().err
    before = registry.read_bytes()
    assert update(registry, "mcptrace", server.url) == 0
    assert registry.read_bytes() == before
    assert "unchanged" in capsys.readouterr().err


def test_a_failing_gate_refuses_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "mcp.json"
    original = json.dumps(
        {"mcpServers": {"mcptrace": {"type": "http", "url": "https://old.example.com/mcp"}}}
    )
    registry.write_text(original)
    url = dead_url()
    assert update(registry, "mcptrace", url) == 1
    assert registry.read_text() == original
    err = capsys.readouterr().err
    assert "refused: gate failed against " + url in err and "initialize:" in err
    assert list(tmp_path.iterdir()) == [registry]  # no temporary file left behind


def test_a_malformed_registry_is_reported_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "mcp.json"
    registry.write_text('{"mcpServers": {"half": ')
    assert update(registry, "x", dead_url()) == 2
    assert registry.read_text() == '{"mcpServers": {"half": '
    assert "not valid JSON" in capsys.readouterr().err


def test_a_bad_entry_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert update(tmp_path / "mcp.json", "../etc", dead_url()) == 2
    assert "registry name" in capsys.readouterr().err
    assert not (tmp_path / "mcp.json").exists()
