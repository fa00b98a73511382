"""A small fleet's logs, built from the golden sample logs: three replicas, both protocol eras, a rotation,
and a request whose lines are on two replicas (its downstream call logged by `web-3`, as a proxy in front
of `web-1` would)."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "sample_logs"
#: The request whose `downstream_call` line is moved from web-1 to web-3.
SPLIT_REQUEST = "req-36eabfad243ca3ba"


def fleet_logs(root: Path) -> dict[str, Path]:
    """replica name -> its log folder. `web-1` has a rotated log (`mcptrace.log.1` then `mcptrace.log`)."""
    logs = {name: root / name for name in ("web-1", "web-2", "web-3")}
    for folder in logs.values():
        folder.mkdir(parents=True)
    lines = (SAMPLES / "incidents" / "mcptrace.log").read_bytes().splitlines(keepends=True)
    moved = [
        line for line in lines
        if json.loads(line).get("mcp_request_id") == SPLIT_REQUEST and json.loads(line)["event"] == "downstream_call"
    ]
    assert len(moved) == 1
    lines = [line for line in lines if line not in moved]
    half = len(lines) // 2
    (logs["web-1"] / "mcptrace.log.1").write_bytes(b"".join(lines[:half]))
    (logs["web-1"] / "mcptrace.log").write_bytes(b"".join(lines[half:]))
    (logs["web-2"] / "mcptrace.log").write_bytes((SAMPLES / "demo-v2.jsonl").read_bytes())
    (logs["web-3"] / "mcptrace.log").write_bytes((SAMPLES / "v1-sample.jsonl").read_bytes() + moved[0])
    return logs
