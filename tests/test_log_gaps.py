"""Gaps are written down: lines the writer could not write are counted, and the log itself says so.

Real failures only: a small tmpfs mounted by the test and filled up (root
needed: skipped with the reason otherwise), a log file made immutable
(`chattr +i`, which refuses writes even to root and even through an open
descriptor), a log file removed while open, a rotation the directory refuses.
After each, the next line that can be written is preceded by one `log_gap` line
whose `dropped_lines` is exactly what `/health`, `LogSink.stats` and
`mcptrace_telemetry_dropped_total{signal="logs"}` counted, and no torn line is
left in the file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcptrace import EventLogger, LogSink
from mcptrace._process import running
from mcptrace._schema import validate_record
from mcptrace.analysis import load
from mcptrace.testing import RunningProcess, running_server
from tests.helpers import UNLIMITED, eventually

NO_CACHE = {"MCPTRACE_HEALTH_CACHE_SECONDS": "0"}


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` bytes at `path`, unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` refuses every write until the block ends (`chattr +i`); skipped where the filesystem cannot."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make the log file immutable here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def lines_of(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """(JSON records, numbers of lines that start like a record but do not parse) of a log or stderr copy."""
    records, torn = [], []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.startswith(b"{"):
            continue  # stderr also carries the server's plain-text messages
        try:
            records.append(json.loads(line))
        except ValueError:
            torn.append(number)
    return records, torn


def gaps(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [r for r in records if r["event"] == "log_gap"]
    for gap in found:
        assert validate_record(gap) == [], gap
        assert gap["level"] == "warning" and gap["mcp_request_id"] is None
        assert datetime.fromisoformat(gap["gap_start"]) <= datetime.fromisoformat(gap["gap_end"])
        assert datetime.fromisoformat(gap["gap_end"]) <= datetime.fromisoformat(gap["timestamp"])
    return found


def emit_requests(logger: EventLogger, n: int, *, first: int = 0) -> None:
    """What a request does to the log: three lines, then a commit as its answer leaves."""
    for i in range(first, first + n):
        for event in ("request_received", "tool_call", "response_sent"):
            logger.emit(event, mcp_request_id=f"req-{i:06d}", tool_name="search_database", message="x" * 80)
        logger.commit()


# -- the sink alone, on real filesystems ---------------------------------------------------------------


def test_a_full_disk_costs_counted_lines_no_torn_line_and_one_gap_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "200k") as disk:
        sink = LogSink(disk / "app.log", flush_interval=60)
        logger = EventLogger(sink)
        emit_requests(logger, 1500)  # about 1 MB: five times what fits
        dropped = sink.stats.lines_dropped
        assert dropped > 2000 and not sink.writable()
        assert sink.stats.last_error is not None and sink.stats.last_error.startswith("ENOSPC")
        assert (disk / "app.log").read_bytes().endswith(b"\n"), "a write cut by the full disk was cut back"
        assert sink.dropped() == {("logs", "file_write_failed"): dropped}

        resize(disk, "4m")
        emit_requests(logger, 1, first=1500)
        records, torn = lines_of(disk / "app.log")
        assert torn == [] and sink.stats.lines_torn == 0
        [gap] = gaps(records)
        assert gap["dropped_lines"] == dropped == sink.stats.lines_dropped
        assert gap["error"].startswith("ENOSPC: ")
        assert records.index(gap) == len(records) - 4, "the gap comes right before the next lines written"
        assert len(records) == sink.stats.lines_written + sink.stats.gaps
        assert len(records) - 1 + dropped == 1501 * 3, "every line is either in the file or in the gap"
        assert sink.writable()
        logger.close()


def test_a_log_file_removed_while_open_is_reopened_and_its_last_lines_counted(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = LogSink(path, flush_interval=60)
    logger = EventLogger(sink)
    emit_requests(logger, 5)
    assert sink.writable()  # the file is where it should be
    path.unlink()
    emit_requests(logger, 4, first=5)  # written to the removed file: gone with it
    assert not path.exists()
    assert sink.writable(), "the check notices the removal, reopens the path and writes the gap down"
    assert path.exists()
    emit_requests(logger, 1, first=9)
    records, torn = lines_of(path)
    [gap] = gaps(records)
    assert gap["dropped_lines"] == 12 == sink.stats.lines_dropped and "removed" in gap["error"]
    assert [r["mcp_request_id"] for r in records[1:]] == ["req-000009"] * 3 and torn == []
    assert sink.writable()
    logger.close()


def test_a_log_renamed_away_keeps_its_lines_and_a_new_file_starts(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = LogSink(path, flush_interval=60)
    logger = EventLogger(sink)
    emit_requests(logger, 2)
    path.rename(tmp_path / "app.log.shipped")  # an external logrotate without copytruncate
    emit_requests(logger, 2, first=2)
    assert sink.writable()
    emit_requests(logger, 1, first=4)
    old, _ = lines_of(tmp_path / "app.log.shipped")
    new, _ = lines_of(path)
    assert len(old) == 12 and len(new) == 3 and sink.stats.lines_dropped == 0 and not gaps(new)
    logger.close()


def test_a_refused_rotation_loses_nothing_and_rotation_resumes(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    (tmp_path / "app.log.1").mkdir()
    (tmp_path / "app.log.1" / "keep").write_text("a directory where the first backup should go")
    sink = LogSink(path, max_bytes=3000, backup_count=1, flush_interval=60)
    logger = EventLogger(sink)
    emit_requests(logger, 20)
    assert sink.stats.rotations == 0 and sink.stats.lines_dropped == 0 and sink.writable()
    assert sink.stats.last_error is not None and sink.stats.last_error.startswith("rotation failed")
    assert path.stat().st_size > 3000
    shutil.rmtree(tmp_path / "app.log.1")

    def rotated() -> None:
        emit_requests(logger, 1, first=100)
        assert sink.stats.rotations > 0

    eventually(rotated, timeout=5)
    records = [r for p in sorted(tmp_path.glob("app.log*")) for r in lines_of(p)[0]]
    assert len(records) == sink.stats.lines_written and not gaps(records)
    logger.close()


# -- the real server -----------------------------------------------------------------------------------


def health(server: RunningProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.base_url}/health", timeout=10).json()
    return body


def dropped_metric(server: RunningProcess) -> int:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    found = re.search(r'mcptrace_telemetry_dropped_total\{[^}]*reason="file_write_failed"[^}]*\} (\d+)', text)
    return int(found.group(1)) if found else 0


def calls(server: RunningProcess, n: int, tool: str = "ping", arguments: dict[str, Any] | None = None) -> None:
    """`n` sessionless tool calls; every one must be answered, whatever happens to the log.

    A `ping` writes one line (`tool_call`)."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"accept": "application/json", "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
               "mcp-name": tool}
    with httpx.Client(timeout=15, headers=headers) as http:
        for i in range(n):
            body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": tool, "arguments": arguments or {}, "_meta": meta}}
            r = http.post(server.url, json=body)
            assert r.status_code == 200 and "result" in r.json(), r.text


def test_a_server_whose_log_disk_fills_answers_everything_and_writes_the_gap_down(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "200k") as disk:
        log = disk / "mcptrace.log"
        args = ["serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--log-file", str(log),
                "--log-stderr", *UNLIMITED]
        with running(args, disk, env=NO_CACHE) as srv:  # its stderr (the JSON copy) lands on the disk too
            calls(srv, 150, "search_database", {"query": "anvil"})
            sink = health(srv)["checks"]["log_sink"]
            assert sink["status"] == "degraded" and sink["error"].startswith("ENOSPC")
            assert sink["lines_dropped"] > 0 and sink["lines_dropped"] == dropped_metric(srv)

            resize(disk, "8m")

            def recovered() -> dict[str, Any]:
                sink = health(srv)["checks"]["log_sink"]
                assert sink["status"] == "healthy" and sink["gaps"] == 1, sink
                return dict(sink)

            sink = eventually(recovered)  # no call needed: the writer retries by itself
            records, torn = lines_of(log)
            [gap] = gaps(records)
            assert gap["dropped_lines"] == sink["lines_dropped"] == dropped_metric(srv)
            assert torn == [] and sink["lines_torn"] == 0
            assert load([log]).report.corrupt == []
            calls(srv, 2)
            assert lines_of(log)[0][-1]["event"] == "tool_call"
        copy, copy_torn = lines_of(srv.stderr_path)
        assert gaps(copy) and sum(g["dropped_lines"] for g in gaps(copy)) > 0, "stderr says its own gap"
        assert len(copy_torn) <= 1, "a stream cannot be cut back: a fragment there is closed by a newline"


def test_a_log_file_made_unwritable_is_a_counted_gap_once_it_is_writable_again(tmp_path: Path) -> None:
    with running_server(tmp_path, *UNLIMITED, env=NO_CACHE) as srv:
        calls(srv, 2)
        with immutable(srv.log_file):
            calls(srv, 5)
            sink = health(srv)["checks"]["log_sink"]
            assert sink["status"] == "degraded" and sink["error"].startswith("EPERM"), sink
            assert sink["lines_dropped"] == 5 == dropped_metric(srv)

        def recovered() -> None:
            assert health(srv)["checks"]["log_sink"]["status"] == "healthy"

        eventually(recovered)
        records, torn = lines_of(srv.log_file)
        [gap] = gaps(records)
        assert gap["dropped_lines"] == 5 and gap["error"].startswith("EPERM") and torn == []
        calls(srv, 1)
        assert [r["event"] for r in lines_of(srv.log_file)[0][-2:]] == ["log_gap", "tool_call"]
