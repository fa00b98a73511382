"""Generated call sequences with known answers, checked against plain-Python computations."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcptrace.analysis import assign_runs, build_index, chain, load, loops, runs, tool_stats
from mcptrace.logs._lookup import lookup

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def frame_of(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    """Rows as they would come out of `load`: typed by the pinned schema."""
    return pl.DataFrame([_typed(r) for r in rows], schema=load_schema()).lazy()


def load_schema() -> pl.Schema:
    from mcptrace.logs._parse import read_schema

    return read_schema()


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in load_schema()}


def reference_quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), written out."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


durations = st.lists(
    st.floats(min_value=0.0, max_value=1e5, allow_nan=False, width=32), min_size=1, max_size=60
)


@SETTINGS
@given(
    per_tool=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.tuples(durations, st.data()), min_size=1)
)
def test_tool_percentiles_and_error_rates_match_plain_python(per_tool: dict[str, Any]) -> None:
    rows = []
    expected = {}
    for tool, (values, data) in per_tool.items():
        failed = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
        for i, (v, bad) in enumerate(zip(values, failed, strict=True)):
            rows.append(
                {
                    "timestamp": T0 + timedelta(milliseconds=i),
                    "event": "tool_call",
                    "tool_name": tool,
                    "mcp_request_id": f"{tool}-{i}",
                    "duration_ms": v,
                    "status": "error" if bad else "success",
                }
            )
        expected[tool] = (len(values), sum(failed), values)
    got = {r["tool_name"]: r for r in tool_stats(frame_of(rows)).collect().iter_rows(named=True)}
    assert set(got) == set(expected)
    for tool, (calls, errors, values) in expected.items():
        row = got[tool]
        assert row["calls"] == calls and row["errors"] == errors
        assert row["error_rate"] == pytest.approx(errors / calls)
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            assert row[name] == pytest.approx(reference_quantile(values, q), rel=1e-9, abs=1e-6)
        if len(values) >= 2:
            inclusive = statistics.quantiles(values, n=100, method="inclusive")
            assert row["p99_ms"] == pytest.approx(inclusive[98], rel=1e-9, abs=1e-6)


# -- chains ----------------------------------------------------------------------------------------

EVENTS = ["request_received", "downstream_call", "tool_call", "response_sent"]


@st.composite
def interleaved_requests(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Several requests whose lines interleave in the file; some share a timestamp."""
    n = draw(st.integers(min_value=1, max_value=8))
    lines = []
    for r in range(n):
        start = draw(st.integers(min_value=0, max_value=50))
        steps = draw(st.lists(st.integers(min_value=0, max_value=3), min_size=2, max_size=4))
        t = start
        for k, step in enumerate(steps):
            t += step
            lines.append(
                {
                    "timestamp": T0 + timedelta(milliseconds=t),
                    "event": EVENTS[min(k, 3)],
                    "mcp_request_id": f"req-{r:03d}",
                    "tool_name": "t",
                    "message": f"{r}:{k}",
                }
            )
    return draw(st.permutations(lines))


def _stamp(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "timestamp": row["timestamp"].isoformat(timespec="milliseconds").replace("+00:00", "Z")}


@SETTINGS
@given(lines=interleaved_requests())
def test_a_chain_is_its_requests_lines_in_time_order_whichever_way_it_is_read(
    lines: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("chain")
    path = directory / "x.log"
    path.write_bytes(b"".join(orjson.dumps(_stamp(r)) + b"\n" for r in lines))
    rid = lines[0]["mcp_request_id"]
    # Plain Python: this request's lines, by time, file order among equal times.
    expected = [
        r["message"]
        for r in sorted((r for r in lines if r["mcp_request_id"] == rid), key=lambda r: r["timestamp"])
    ]
    from_frame = chain(load([path]).frame, rid).collect()
    assert from_frame.get_column("message").to_list() == expected
    assert from_frame.get_column("elapsed_ms").to_list()[0] == 0.0
    assert [r["message"] for r in lookup([path], value=rid, use_index=False).records] == expected
    build_index([path])
    indexed = lookup([path], value=rid)
    assert indexed.from_index and [r["message"] for r in indexed.records] == expected


# -- loops -----------------------------------------------------------------------------------------

calls_strategy = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob"]),  # caller
        st.sampled_from(["search", "fetch"]),  # tool
        st.sampled_from(["x", "y"]),  # arguments hash
        st.sampled_from(["r1", "r2"]),  # result hash
        st.integers(min_value=0, max_value=3),  # repeat the call this many extra times
    ),
    max_size=25,
)


def _expand(spec: list[tuple[str, str, str, str, int]]) -> list[dict[str, Any]]:
    rows = []
    for caller, tool, args, result, extra in spec:
        for _ in range(1 + extra * 2):
            i = len(rows)
            rows.append(
                {
                    "timestamp": T0 + timedelta(milliseconds=100 * i),  # machine speed: no poll
                    "event": "tool_call",
                    "mcp_request_id": f"q{i}",
                    "caller_id": caller,
                    "tool_name": tool,
                    "arguments_hash": args,
                    "result_hash": result,
                    "input_token_count": 10,
                    "status": "success",
                    "duration_ms": 1.0,
                }
            )
    return rows


def reference_repeats(rows: list[dict[str, Any]], threshold: int) -> set[tuple[str, ...]]:
    """Per caller, stretches of one (tool, arguments); in each, the runs of one result at least
    `threshold` long, and the episode from the first such run's start to the last one's end."""
    out = set()
    for caller in {r["caller_id"] for r in rows}:
        stretches: list[list[dict[str, Any]]] = []
        for r in [r for r in rows if r["caller_id"] == caller]:
            if stretches and (r["tool_name"], r["arguments_hash"]) == (
                stretches[-1][0]["tool_name"], stretches[-1][0]["arguments_hash"]
            ):
                stretches[-1].append(r)
            else:
                stretches.append([r])
        for stretch in stretches:
            counted: list[int] = []  # positions in the stretch of calls in a long enough run
            start = 0
            for i in range(1, len(stretch) + 1):
                if i == len(stretch) or stretch[i]["result_hash"] != stretch[start]["result_hash"]:
                    if i - start >= threshold:
                        counted += range(start, i)
                    start = i
            if counted:
                out.add(tuple(x["mcp_request_id"] for x in stretch[min(counted) : max(counted) + 1]))
    return out


@SETTINGS
@given(spec=calls_strategy, threshold=st.integers(min_value=3, max_value=6))
def test_repeat_episodes_match_plain_python(
    spec: list[tuple[str, str, str, str, int]], threshold: int
) -> None:
    rows = _expand(spec)
    episodes = loops(frame_of(rows), by=("caller_id",), threshold=threshold).collect()
    found = {tuple(e["request_ids"]) for e in episodes.iter_rows(named=True) if e["kind"] == "repeat"}
    assert found == reference_repeats(rows, threshold)
    for e in episodes.iter_rows(named=True):
        assert e["count"] == len(e["request_ids"]) and e["start"] <= e["end"]


@SETTINGS
@given(
    period=st.integers(min_value=2, max_value=6),
    times=st.integers(min_value=3, max_value=5),
    noise=st.integers(min_value=0, max_value=4),
)
def test_a_planted_cycle_is_found_with_its_period(period: int, times: int, noise: int) -> None:
    tools = [f"tool{k}" for k in range(period)]
    spec = [("carol", f"noise{k}", "n", "n", 0) for k in range(noise)]
    spec += [("carol", tools[i % period], "a", "r", 0) for i in range(period * times)]
    rows = _expand(spec)
    episodes = loops(frame_of(rows), by=("caller_id",)).collect()
    cycles = [e for e in episodes.iter_rows(named=True) if e["kind"] == "cycle"]
    assert len(cycles) == 1
    assert cycles[0]["request_ids"] == [r["mcp_request_id"] for r in rows[noise:]]
    assert cycles[0]["tool_name"] == "→".join(tools)


def _same_call(results: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": T0 + timedelta(milliseconds=100 * i),
            "event": "tool_call",
            "mcp_request_id": f"q{i}",
            "caller_id": "looper",
            "tool_name": "search",
            "arguments_hash": "same",
            "result_hash": result,
            "input_token_count": 4,
            "status": "success",
            "duration_ms": 1.0,
        }
        for i, result in enumerate(results)
    ]


def test_a_loop_whose_answer_turns_into_a_refusal_is_one_episode() -> None:
    # answered, refused a few times, answered once more, then refused for good
    rows = _same_call(["answer"] * 8 + ["refused"] * 3 + ["answer"] + ["refused"] * 12)
    (episode,) = loops(frame_of(rows), by=("caller_id",)).collect().iter_rows(named=True)
    assert episode["kind"] == "repeat" and episode["count"] == len(rows)
    assert episode["request_ids"] == [r["mcp_request_id"] for r in rows]


def test_polling_that_gets_stuck_is_a_loop_from_where_it_got_stuck() -> None:
    rows = _same_call([f"status-{i}" for i in range(10)] + ["stuck"] * 6)
    (episode,) = loops(frame_of(rows), by=("caller_id",)).collect().iter_rows(named=True)
    assert episode["request_ids"] == [r["mcp_request_id"] for r in rows[10:]]


@SETTINGS
@given(n=st.integers(min_value=5, max_value=30))
def test_same_arguments_with_a_changing_result_is_polling_not_a_loop(n: int) -> None:
    rows = [
        {
            "timestamp": T0 + timedelta(seconds=i),
            "event": "tool_call",
            "mcp_request_id": f"p{i}",
            "caller_id": "poller",
            "tool_name": "status",
            "arguments_hash": "same",
            "result_hash": f"page{i}",
            "input_token_count": 4,
            "status": "success",
            "duration_ms": 1.0,
        }
        for i in range(n)
    ]
    assert loops(frame_of(rows)).collect().height == 0


# -- runs ------------------------------------------------------------------------------------------


@st.composite
def two_era_traffic(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, tuple[str, frozenset[str]]]]:
    """Handshake-era sessions and sessionless agents (some with baggage), with the runs they form."""
    rows: list[dict[str, Any]] = []
    planted: dict[str, tuple[str, frozenset[str]]] = {}
    clock = 0

    def add(rid_group: str, rule: str, n: int, **fields: Any) -> None:
        nonlocal clock
        ids = []
        for _ in range(n):
            clock += draw(st.integers(min_value=1, max_value=30))
            rid = f"req-{len(rows):04d}"
            ids.append(rid)
            rows.append(
                {
                    "timestamp": T0 + timedelta(seconds=clock),
                    "event": "tool_call",
                    "mcp_request_id": rid,
                    "tool_name": "search",
                    "status": "success",
                    "duration_ms": 1.0,
                    **fields,
                }
            )
        planted[rid_group] = (rule, frozenset(ids))

    for i in range(draw(st.integers(min_value=0, max_value=3))):
        add(f"s{i}", "session", draw(st.integers(1, 5)), session_id=f"sess-{i}", caller_id="legacy-agent")
    for i in range(draw(st.integers(min_value=0, max_value=2))):
        add(
            f"b{i}",
            "baggage",
            draw(st.integers(1, 5)),
            caller_id="modern",
            client_name="py",
            client_version="2",
            baggage=[{"key": "run_id", "value": f"run-{i}"}],
        )
    for i in range(draw(st.integers(min_value=0, max_value=3))):
        clock += 400  # more than the 5-minute gap: a new run
        add(f"g{i}", "gap", draw(st.integers(1, 5)), caller_id="modern", client_name="py", client_version="2")
    return rows, planted


@SETTINGS
@given(traffic=two_era_traffic())
def test_runs_are_rebuilt_from_both_eras(traffic: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    rows, planted = traffic
    got = runs(frame_of(rows)).collect()
    rebuilt = {(r["rule"], frozenset(r["request_ids"])) for r in got.iter_rows(named=True)}
    assert rebuilt == set(planted.values())
    for r in got.iter_rows(named=True):
        assert r["calls"] == len(r["request_ids"]) and r["errors"] == 0


def test_a_loop_spanning_two_gap_split_runs_is_still_found_per_caller() -> None:
    rows = []
    for i in range(8):
        pause = 600 if i == 4 else 0  # ten idle minutes in the middle: two runs
        t = T0 + timedelta(seconds=i + pause + (600 if i > 4 else 0))
        rows.append(
            {
                "timestamp": t,
                "event": "tool_call",
                "mcp_request_id": f"l{i}",
                "caller_id": "agent",
                "client_name": "py",
                "tool_name": "search",
                "arguments_hash": "a",
                "result_hash": "r",
                "status": "error",
                "duration_ms": 1.0,
            }
        )
    frame = frame_of(rows)
    assert runs(frame).collect().height == 2
    per_run = loops(assign_runs(frame), by=("run_id",)).collect()
    assert per_run.height == 0  # four calls in each run: under the threshold
    per_caller = loops(frame, by=("caller_id",), window=timedelta(hours=1)).collect()
    assert per_caller.get_column("count").to_list() == [8]


def test_near_duplicate_retries_and_rate_spikes_are_flagged() -> None:
    rows = []
    for i in range(6):  # the same failing search, reworded each time
        rows.append(
            {
                "timestamp": T0 + timedelta(seconds=i),
                "event": "tool_call",
                "mcp_request_id": f"n{i}",
                "caller_id": "retrier",
                "tool_name": "search",
                "arguments_hash": f"variant{i}",
                "result_hash": "no-results",
                "input_token_count": 12 + i % 2,
                "status": "success",
            }
        )
    for minute in range(5):  # a calm caller, then a burst
        n = 200 if minute == 4 else 3
        for k in range(n):
            rows.append(
                {
                    "timestamp": T0 + timedelta(minutes=minute, milliseconds=k * 100),
                    "event": "tool_call",
                    "mcp_request_id": f"s{minute}-{k}",
                    "caller_id": "burster",
                    "tool_name": f"t{k % 7}",
                    "arguments_hash": f"{k}",
                    "result_hash": f"{k}",
                    "status": "success",
                }
            )
    kinds = {
        (e["kind"], e["caller_id"])
        for e in loops(frame_of(rows), by=("caller_id",)).collect().iter_rows(named=True)
    }
    assert ("near_duplicate", "retrier") in kinds
    assert ("rate_spike", "burster") in kinds
    assert ("rate_spike", "retrier") not in kinds


def test_index_and_json_give_the_same_runs(tmp_path: Path) -> None:
    rows = [
        _stamp(
            {
                "timestamp": T0 + timedelta(seconds=i),
                "event": "tool_call",
                "mcp_request_id": f"r{i}",
                "caller_id": "c",
                "session_id": "s" if i < 3 else None,
                "tool_name": "t",
                "status": "success",
            }
        )
        for i in range(6)
    ]
    path = tmp_path / "x.log"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    before = runs(load([path]).frame).collect()
    build_index([path])
    assert runs(load([path]).frame).collect().equals(before)
