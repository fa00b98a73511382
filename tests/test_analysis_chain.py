"""`mcptrace chain` selects a request by id, by trace id, or by session + JSON-RPC id."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from mcptrace.cli import main


@pytest.fixture
def log(tmp_path: Path) -> Path:
    lines = []
    for i, (session, jsonrpc) in enumerate([("s1", "1"), ("s2", "1"), ("s1", "2")]):
        for k, event in enumerate(["request_received", "tool_call", "response_sent"]):
            lines.append(
                {
                    "timestamp": f"2026-11-25T14:00:0{i}.{k}00Z",
                    "event": event,
                    "mcp_request_id": f"req-{i}",
                    "session_id": session,
                    "jsonrpc_id": jsonrpc,
                    "trace_id": f"trace-{i}",
                    "tool_name": "t",
                    "status": "success",
                    "duration_ms": 1.0,
                    "downstream_calls": [
                        {
                            "service": "db",
                            "query_hash": "q",
                            "duration_ms": 0.5,
                            "status": "success",
                            "error": None,
                        }
                    ]
                    if event == "tool_call"
                    else None,
                }
            )
    path = tmp_path / "x.log"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    return path


def chain_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["chain", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_by_trace_id_and_by_session_and_jsonrpc_id(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert {r["mcp_request_id"] for r in chain_json(capsys, "trace-2", str(log), "--by", "trace")} == {
        "req-2"
    }
    by_session = chain_json(capsys, "s1", str(log), "--by", "session", "--jsonrpc-id", "1")
    assert [r["event"] for r in by_session] == ["request_received", "tool_call", "response_sent"]
    assert {r["mcp_request_id"] for r in by_session} == {"req-0"}


def test_session_without_jsonrpc_id_is_a_clear_error(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chain", "s1", str(log), "--by", "session"]) == 2
    assert "--jsonrpc-id" in capsys.readouterr().err


def test_csv_and_the_tree(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chain", "req-1", str(log), "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("timestamp,event,mcp_request_id") and len(rows) == 4
    assert main(["chain", "req-1", str(log)]) == 0
    tree = capsys.readouterr().out
    assert "req-1  t  SUCCESS" in tree and "└─ db  query q  0.5 ms  success" in tree
