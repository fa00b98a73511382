"""The byte search behind an unindexed `chain`: every occurrence, whichever thread and chunk finds it."""

from __future__ import annotations

import mmap
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcptrace.logs import _scan
from mcptrace.logs._lookup import lookup
from mcptrace.logs._scan import find_all, lines_at


def occurrences(data: bytes, needle: bytes) -> list[int]:
    """Every start of `needle` in `data`, overlapping ones included, the plain way."""
    return [i for i in range(len(data) - len(needle) + 1) if data[i : i + len(needle)] == needle]


PAGE = mmap.ALLOCATIONGRANULARITY


@pytest.fixture(params=["libc", "mmap module"])
def finder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with libc's mmap and memmem, and with the fallback used where libc has neither."""
    if request.param == "libc":
        if _scan._native_search() is None:
            pytest.skip("no memmem in this libc")
    else:
        monkeypatch.setattr(_scan, "_native_search", lambda: None)
    return str(request.param)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(min_value=0, max_value=4 * PAGE),
    needle=st.binary(min_size=1, max_size=6).map(lambda b: bytes(x % 2 + 97 for x in b)),
    near_edges=st.lists(st.tuples(st.integers(1, 4), st.integers(-6, 3)), max_size=8),
    windows=st.integers(min_value=1, max_value=2),
    threads=st.integers(min_value=1, max_value=4),
)
def test_every_occurrence_is_found_once_even_across_window_boundaries(
    tmp_path_factory: pytest.TempPathFactory,
    finder: str,
    size: int,
    needle: bytes,
    near_edges: list[tuple[int, int]],
    windows: int,
    threads: int,
) -> None:
    data = bytearray(b"." * size)
    for page, shift in near_edges:  # plant the needle around window boundaries
        at = page * PAGE + shift
        if 0 <= at <= size - len(needle):
            data[at : at + len(needle)] = needle
    path = tmp_path_factory.mktemp("scan") / "data"
    path.write_bytes(data)
    found = find_all(path, needle, threads=threads, window_bytes=windows * PAGE)
    assert found == occurrences(bytes(data), needle)


def test_lines_at_returns_each_matching_line_once_with_its_offset(tmp_path: Path) -> None:
    long_line = b"x" * 200_000 + b"needle" + b"y" * 150_000  # longer than one read step
    data = b"first needle needle\nnothing here\n" + long_line + b"\nlast needle"
    path = tmp_path / "lines"
    path.write_bytes(data)
    offsets = find_all(path, b"needle")
    assert len(offsets) == 4
    starts = [0, len(b"first needle needle\nnothing here\n"), len(data) - len(b"last needle")]
    assert lines_at(path, offsets) == [
        (starts[0], b"first needle needle"),
        (starts[1], long_line),
        (starts[2], b"last needle"),
    ]


def test_a_large_log_is_searched_in_parallel_chunks_with_the_same_answer(
    tmp_path: Path, finder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_scan, "WINDOW_BYTES", PAGE)
    monkeypatch.setattr(_scan, "PARALLEL_MIN_BYTES", 0)
    lines = [
        {
            "timestamp": f"2026-11-25T14:00:{i % 60:02d}.{i % 1000:03d}Z",
            "event": "tool_call",
            "mcp_request_id": f"req-{i % 97:04d}",
            "message": "m" * (i % 50),
        }
        for i in range(3000)
    ]
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    found = lookup([path], value="req-0042", use_index=False).records
    expected = sorted(
        (r for r in lines if r["mcp_request_id"] == "req-0042"), key=lambda r: str(r["timestamp"])
    )
    assert found == expected


def test_an_unknown_id_is_answered_with_the_ids_sharing_its_longest_prefix(tmp_path: Path) -> None:
    ids = ["req-abcdef0000000001", "req-abcdef0000000002", "req-abcd99ffffffffff", "req-ab77aaaaaaaaaaaa"]
    ids += [f"req-ab{i:014x}" for i in range(200)]
    log = tmp_path / "x.log"
    log.write_bytes(b"".join(
        orjson.dumps({"timestamp": "2026-11-25T14:00:00.000Z", "event": "tool_call", "mcp_request_id": i}) + b"\n"
        for i in ids
    ))
    result = lookup([log], value="req-abcdef000000000X", use_index=False)
    assert result.records == []
    message = result.not_found_message("req-abcdef000000000X")
    assert f"{len(ids)} line(s)" in message
    suggested = message.split("close ids: ")[1].split(", ")
    assert sorted(suggested) == ["req-abcdef0000000001", "req-abcdef0000000002"]
