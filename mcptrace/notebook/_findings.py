"""Figures of the findings: the incidents on one time axis, and the requests the guards refused.

Refusals never reach a tool, so the tool-call figures cannot show an auth
failure or a rate-limit storm; these two figures do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from mcptrace import _fields as f
from mcptrace.notebook import _frames
from mcptrace.notebook._frames import Frame
from mcptrace.notebook._style import ERROR_COLOR, MAX_SERIES, TIME_AXIS, empty_figure, plotly_go, shorten, styled

if TYPE_CHECKING:
    import plotly.graph_objects as go

SEVERITY_COLORS = {"high": ERROR_COLOR, "medium": "#ff7f0e", "low": "#bcbd22"}
_REASON_COLORS = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def incident_timeline(findings: pl.DataFrame) -> go.Figure:
    """One bar per incident (`analysis.incidents` rows) on a UTC time axis, coloured by severity."""
    title = "Incidents"
    if findings.is_empty():
        return empty_figure(title, "no incidents found")
    go = plotly_go()
    fig = go.Figure()
    labels = [f"#{n} {shorten(str(r['kind']), 24)} · {shorten(str(r['subject']), 28)}" for n, r in _numbered(findings)]
    for severity, color in SEVERITY_COLORS.items():
        rows = [(n, r) for n, r in _numbered(findings) if r["severity"] == severity]
        if not rows:
            continue
        fig.add_trace(
            go.Bar(
                orientation="h",
                y=[labels[n - 1] for n, _ in rows],
                base=[r["start"] for _, r in rows],
                # at least a second wide, so an instant (a restart, a refused resource) stays visible
                x=[max((r["end"] - r["start"]).total_seconds() * 1000, 1000.0) for _, r in rows],
                name=f"{severity} severity",
                marker_color=color,
                customdata=[[shorten(r["summary"], 160)] for _, r in rows],
                hovertemplate="%{y}<br>%{customdata[0]}<extra></extra>",
            )
        )
    fig.update_xaxes(type="date", title_text=TIME_AXIS)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=labels, title_text="incident")
    return styled(fig, title, height=max(220, 90 + 34 * findings.height), barmode="overlay")


def _numbered(findings: pl.DataFrame) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(findings.iter_rows(named=True), 1))


def refusals_over_time(logs: Frame, *, every: str = "5s") -> go.Figure:
    """Requests the guards refused per second, stacked by reason and who was refused."""
    table = _frames.refusals(logs, every=every)
    title = "Refused requests (auth failures, rate limits, suspensions)"
    if table.is_empty():
        return empty_figure(title, "no request was refused")
    seconds = _frames.bucket_seconds(every)
    series = table.with_columns(pl.format("{} · {}", pl.col(f.REFUSAL_REASON), pl.col("subject")).alias("series"))
    heaviest = (
        series.group_by("series").agg(pl.col("refused").sum()).sort("refused", "series", descending=[True, False])
    )
    keep = heaviest["series"].head(MAX_SERIES - 1).to_list()
    if heaviest.height > MAX_SERIES:
        series = series.with_columns(
            pl.when(pl.col("series").is_in(keep)).then(pl.col("series")).otherwise(pl.lit("other")).alias("series")
        )
    else:
        keep = heaviest["series"].to_list()
    grouped = series.group_by("series", "bucket").agg(pl.col("refused").sum()).sort("bucket")
    go = plotly_go()
    fig = go.Figure()
    for i, name in enumerate([*keep, "other"]):
        rows = grouped.filter(pl.col("series") == name)
        if rows.is_empty():
            continue
        fig.add_trace(
            go.Bar(
                x=rows["bucket"],
                y=rows["refused"] / seconds,
                name=shorten(name, 48),
                marker_color=_REASON_COLORS[i % len(_REASON_COLORS)],
                customdata=rows["refused"],
                hovertemplate=f"{name}<br>" + "%{customdata} refused (%{y:.1f}/s)<br>%{x}<extra></extra>",
            )
        )
    fig.update_xaxes(type="date", title_text=TIME_AXIS)
    fig.update_yaxes(title_text="refused requests / s", rangemode="tozero")
    return styled(fig, title, barmode="stack")
