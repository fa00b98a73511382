"""A small fleet's logs, built from the golden sample logs: three replicas, both protocol eras, a rotation."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "sample_logs"


def fleet_logs(root: Path) -> dict[str, Path]:
    """replica name -> its log folder. `web-1` has a rotated log (`mcptrace.log.1` then `mcptrace.log`)."""
    logs = {name: root / name for name in ("web-1", "web-2", "web-3")}
    for folder in logs.values():
        folder.mkdir(parents=True)
    lines = (SAMPLES / "incidents" / "mcptrace.log").read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    (logs["web-1"] / "mcptrace.log.1").write_bytes(b"".join(lines[:half]))
    (logs["web-1"] / "mcptrace.log").write_bytes(b"".join(lines[half:]))
    (logs["web-2"] / "mcptrace.log").write_bytes((SAMPLES / "demo-v2.jsonl").read_bytes())
    (logs["web-3"] / "mcptrace.log").write_bytes((SAMPLES / "v1-sample.jsonl").read_bytes())
    return logs
