"""The notebook views on the sample logs: each figure shows the incident it is meant to show."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import mcptrace.notebook as nb
from mcptrace._errors import LogReadError
from mcptrace.testing import subprocess_env
from tests.notebook_helpers import SAMPLE_LOGS, planted

TRUTH = planted()


@pytest.fixture(scope="module")
def logs() -> pl.DataFrame:
    return nb.load_logs(SAMPLE_LOGS)


def _outage_request(logs: pl.DataFrame) -> str:
    calls = nb.tool_calls(logs)
    failed = calls.filter(pl.col("failed") & pl.col("error").str.contains("HTTP 503"))
    return str(failed["mcp_request_id"][0])


def test_waterfall_nests_the_downstream_call_and_marks_the_error(logs: pl.DataFrame) -> None:
    fig = nb.waterfall(nb.request_records(logs, _outage_request(logs)))
    bars = fig.data[0]
    assert list(bars.y) == ["tools/call", "└ tool fetch_upstream", "\u2003\u2003└ upstream #1"]
    assert all(color == "#d62728" for color in bars.marker.color)
    assert any("HTTP 503" in a.text for a in fig.layout.annotations)
    # the downstream call sits inside the tool call on the time axis
    tool_start, down_start = bars.base[1], bars.base[2]
    assert down_start >= tool_start - 1 and down_start + bars.x[2] <= tool_start + bars.x[1] + 1


def test_waterfall_of_an_unknown_request_says_so(logs: pl.DataFrame) -> None:
    fig = nb.waterfall(nb.request_records(logs, "req-does-not-exist"))
    assert not fig.data
    assert "no log lines" in fig.layout.annotations[0].text


def test_latency_percentiles_show_the_slow_window(logs: pl.DataFrame) -> None:
    window = TRUTH["slow_tool"]
    table = nb.latency_table(logs, tools=["fetch_upstream"], every="2s")
    margin = timedelta(seconds=2)
    inside = table.filter(pl.col("bucket").is_between(window["start"] + margin, window["end"] - margin))
    before = table.filter(pl.col("bucket") < window["start"] - margin)
    assert inside.height and before.height
    assert inside["p50"].min() > 1000
    assert before["p95"].max() < 500
    fig = nb.latency_percentiles(logs, tools=["fetch_upstream"])
    assert [t.name for t in fig.data] == ["fetch_upstream p50", "fetch_upstream p95"]


def test_every_figure_has_a_title_axis_titles_and_at_most_six_series(logs: pl.DataFrame) -> None:
    figures = [
        nb.latency_percentiles(logs), nb.caller_rate(logs), nb.error_heatmap(logs), nb.loop_timeline(logs),
        nb.sessions_over_time(logs), nb.runs_timeline(logs),
    ]
    for fig in figures:
        assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
        assert len({t.name for t in fig.data}) <= 6, fig.layout.title.text
        if fig.layout.xaxis.type == "date" or "time" in fig.layout.xaxis.title.text:
            assert "UTC" in fig.layout.xaxis.title.text
    assert "more with tools=" in nb.latency_percentiles(logs).layout.title.text


def test_error_heatmap_shows_the_outage_as_a_red_column(logs: pl.DataFrame) -> None:
    fig = nb.error_heatmap(logs, every="4s")
    heat = fig.data[0]
    row = list(heat.y).index("fetch_upstream")
    window = TRUTH["upstream_outage"]
    rates = pl.Series(list(heat.z[row]), dtype=pl.Float64)
    cells = pl.DataFrame({"bucket": pl.Series(heat.x), "rate": rates})
    red = cells.filter(pl.col("rate") >= 0.99)["bucket"]
    assert red.len() >= 2
    earliest = (window["start"] - timedelta(seconds=4)).replace(tzinfo=None)
    assert red.min() >= earliest and red.max() <= window["end"].replace(tzinfo=None)
    assert {"get_config", "ping", "search_database"} <= set(heat.y)


def test_the_most_severe_loop_episode_is_the_planted_one(logs: pl.DataFrame) -> None:
    episodes = nb.loop_episodes(logs)
    truth = TRUTH["agent_loop"]
    loop = episodes.row(0, named=True)
    assert loop["episode"] == 1 and loop["severity"] == "high" and loop["kind"] == "repeat"
    assert (loop["caller_id"], loop["tool_name"]) == (truth["caller_id"], truth["tool_name"])
    assert loop["count"] >= 30
    assert truth["start"] - timedelta(seconds=1) <= loop["start"]
    assert loop["end"] <= truth["end"] + timedelta(seconds=2)


def test_a_steady_probe_is_a_poll_not_a_loop(logs: pl.DataFrame) -> None:
    assert nb.loop_episodes(logs).filter(pl.col("caller_id") == "ci-probe").is_empty()
    polls = nb.loop_episodes(logs, include_polls=True).filter(pl.col("caller_id") == "ci-probe")
    assert polls.height and set(polls["kind"]) == {"poll"} and set(polls["severity"]) == {"low"}
    assert polls["period_s"].median() == pytest.approx(1.0, abs=0.25)


def test_loop_timeline_bands_the_episodes_and_opens_one(logs: pl.DataFrame) -> None:
    episodes = nb.loop_episodes(logs)
    fig = nb.loop_timeline(logs, episodes=episodes, episode=1)
    assert len(fig.layout.shapes) == episodes.height
    assert fig.layout.title.text == "Loop episode #1"
    low, high = fig.layout.xaxis.range
    assert low <= episodes["start"][0] and episodes["end"][0] <= high
    worst = next(t for t in fig.data if t.name == "high-severity loop")
    assert TRUTH["agent_loop"]["caller_id"] in set(worst.y)
    assert any(a.text.startswith("#1 repeat") for a in fig.layout.annotations)


def test_caller_rate_puts_the_loop_and_the_storm_above_every_regular_agent(logs: pl.DataFrame) -> None:
    peaks = dict(nb.caller_rates(logs).group_by("caller_id").agg(pl.col("per_second").max()).iter_rows())
    loud = {TRUTH["agent_loop"]["caller_id"], TRUTH["rate_limit_storm"]["caller_id"]}
    regular = max(rate for caller, rate in peaks.items() if caller not in loud)
    assert all(peaks[caller] > regular for caller in loud), peaks
    fig = nb.caller_rate(logs)
    names = {t.name for t in fig.data}
    assert loud <= names and "other" in names and len(names) <= 6
    # the storm's refusals are a series of their own, on the right axis, with markers so a short burst shows
    (refused,) = [t for t in fig.data if t.name.startswith("refused")]
    assert refused.yaxis == "y2" and "markers" in refused.mode and max(refused.y) > 100
    assert fig.layout.yaxis.rangemode == "tozero"


def test_caller_rate_orders_callers_by_peak_then_name_so_the_same_logs_draw_the_same_figure(
    logs: pl.DataFrame,
) -> None:
    busiest = TRUTH["agent_loop"]["caller_id"]
    # Two more callers whose every call is the busiest one's: three callers tie on the highest peak.
    # And the storm's refusals twice more under those names: three callers refused in the same buckets.
    storm = TRUTH["rate_limit_storm"]["caller_id"]
    twins = [logs.filter(pl.col("caller_id").is_in([busiest, storm]))
             .with_columns(pl.lit(name).alias("caller_id")) for name in ("zz-twin", "aa-twin")]
    tied = pl.concat([logs, *twins])
    fig = nb.caller_rate(tied)
    served = [t for t in fig.data if not t.name.startswith("refused")]
    keys = [(-max(t.y), t.name) for t in served]
    assert keys == sorted(keys)
    assert [t.name for t in served if t.name in {"aa-twin", busiest, "zz-twin"}] == ["aa-twin", busiest, "zz-twin"]
    (refused,) = [t for t in fig.data if t.name.startswith("refused")]
    assert f"aa-twin, {storm}, zz-twin" in refused.customdata


def test_sessions_over_time_counts_sessions_and_sessionless_traffic(logs: pl.DataFrame) -> None:
    fig = nb.sessions_over_time(logs)
    active, new, sessionless = fig.data
    assert max(active.y) >= 2 and sum(new.y) >= 4
    assert sum(sessionless.y) > 100


def test_runs_group_by_session_or_by_caller_and_gap(logs: pl.DataFrame) -> None:
    runs = nb.run_summary(logs)
    rules = dict(runs.group_by("rule").len().iter_rows())
    assert rules["session"] >= 4 and rules["gap"] >= 3
    looping = runs.filter(pl.col("caller_id") == TRUTH["agent_loop"]["caller_id"])
    assert looping.height == 1 and looping["rule"][0] == "gap"
    fig = nb.runs_timeline(logs)
    marked = next(t for t in fig.data if t.name == "call in a high-severity loop")
    assert any(TRUTH["agent_loop"]["caller_id"] in label for label in marked.y)
    assert len(fig.data[0].y) == runs.height


def test_explorer_redraws_when_its_controls_change(logs: pl.DataFrame) -> None:
    explorer = nb.Explorer(SAMPLE_LOGS)
    assert "loop episode(s)" in explorer.status.value
    assert explorer.figures["loop"].layout.title.text == "Loop episode #1"
    request_id = _outage_request(logs)
    explorer.request_box.value = request_id
    assert explorer.figures["waterfall"].layout.title.text == f"Call chain {request_id}"
    explorer.tool_picker.value = ("ping",)
    assert {t.legendgroup for t in explorer.figures["latency"].data} == {"ping"}
    full = len(explorer.figures["latency"].data[0].x)
    explorer.time_slider.index = (2, 5)
    assert len(explorer.figures["latency"].data[0].x) < full


def test_explorer_reports_logs_it_cannot_read(tmp_path: Path) -> None:
    explorer = nb.Explorer(tmp_path / "missing")
    assert "cannot load logs" in explorer.status.value
    assert explorer.figures == {}


def test_unreadable_lines_are_skipped_with_a_warning_and_the_rest_kept(tmp_path: Path) -> None:
    lines = (SAMPLE_LOGS / "mcptrace.log").read_text().splitlines()[:20]
    path = tmp_path / "torn.log"
    path.write_text("\n".join([*lines[:10], "not json", '{"timestamp": "2026-', *lines[10:]]) + "\n")
    with pytest.warns(UserWarning, match=r"2 corrupt line\(s\) skipped: .*torn.log:11.*torn.log:12"):
        assert nb.load_logs(path).height == 20


def test_a_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LogReadError, match="log file not found"):
        nb.load_logs(tmp_path / "nope.log")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )


def test_importing_the_views_loads_no_plotting_library() -> None:
    result = _python(
        "import sys, mcptrace.notebook\n"
        "print(sorted(m for m in ('plotly', 'ipywidgets', 'kaleido') if m in sys.modules))"
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_without_plotly_a_view_says_what_to_install() -> None:
    result = _python(
        "import sys; sys.modules['plotly'] = None\n"
        "import mcptrace.notebook as nb\n"
        f"logs = nb.load_logs({str(SAMPLE_LOGS)!r})\n"
        "try:\n    nb.error_heatmap(logs)\nexcept ImportError as exc:\n    print(exc)\n"
    )
    # Run from this clone, the hint installs the clone (the package index may not have mcptrace).
    clone = Path(nb.__file__).resolve().parents[2]
    assert f"pip install -e '{clone}[notebook]'" in result.stdout, result.stderr


def test_explorer_loads_other_logs_from_its_paths_box(tmp_path: Path) -> None:
    explorer = nb.Explorer(SAMPLE_LOGS)
    before = explorer.status.value
    other = tmp_path / "other.log"
    lines = (SAMPLE_LOGS / "mcptrace.log").read_text().splitlines()
    other.write_text("\n".join(lines[:400]) + "\n")
    explorer.paths_box.value = str(other)
    explorer.load_button.click()
    assert explorer.status.value != before and explorer.logs.height == 400
    assert set(explorer.request_box.options) <= set(explorer.logs["mcp_request_id"].drop_nulls())


def test_refusals_show_the_auth_failures_and_the_storm(logs: pl.DataFrame) -> None:
    table = nb.refusals(logs)
    by_reason = dict(table.group_by("refusal_reason").agg(pl.col("refused").sum()).iter_rows())
    assert by_reason["unauthenticated"] >= 10 and by_reason["rate_limited"] + by_reason["suspended"] > 500
    fig = nb.refusals_over_time(logs)
    assert fig.layout.yaxis.rangemode == "tozero" and "UTC" in fig.layout.xaxis.title.text
    assert {t.name.split(" · ")[0] for t in fig.data} == set(by_reason)
    timeline = nb.incident_timeline(nb.incident_table(logs))
    assert sum(len(t.y) for t in timeline.data) == 5


def test_the_public_api_is_pinned() -> None:
    assert sorted(nb.__all__) == [
        "Explorer", "caller_rate", "caller_rates", "error_heatmap", "error_rates", "incident_table",
        "incident_timeline", "join_logs", "latency_percentiles", "latency_table", "load_logs", "load_spans",
        "loop_episodes", "loop_timeline", "refusals", "refusals_over_time", "request_records", "run_calls",
        "run_summary", "runs_timeline", "sessions_over_time",
        "spans_with_requests", "tool_calls", "waterfall",
    ]
    assert all(callable(getattr(nb, name)) for name in nb.__all__)
