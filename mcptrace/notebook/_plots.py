"""Plotly figures of one incident: each function takes log records (or a shaped table) and returns a Figure.

Figures are plain `plotly.graph_objects.Figure`s, so they render in JupyterLab,
VS Code and in the standalone HTML report alike, and export to PNG with kaleido.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._done import request_done
from mcptrace.notebook import _frames
from mcptrace.notebook._frames import Frame
from mcptrace.notebook._style import (
    DOWNSTREAM_COLOR,
    ERROR_COLOR,
    MAX_SERIES,
    OK_COLOR,
    TIME_AXIS,
    colors,
    empty_figure,
    line_mode,
    plotly_go,
    shorten,
    styled,
    top_series,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

#: Loop episode severity (from `analysis.loops`) -> colour; "" is a call in no episode.
SEVERITY_COLORS = {"": "#1f77b4", "low": "#bcbd22", "medium": "#ff7f0e", "high": "#9467bd"}
_SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}
_WATERFALL_HOVER = "%{y}<br>%{customdata[0]:.1f} ms, %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
_LATENCY_HOVER = "%{y:.1f} ms<br>%{x}<br>%{customdata} calls<extra></extra>"
_DASHES = {"p50": "solid", "p95": "dash", "p99": "dot"}


def waterfall(chain: Frame) -> go.Figure:
    """One request as a trace view: a bar per step on a millisecond axis, downstream calls nested, errors red.

    `chain` holds the log lines of one request (`mcptrace.notebook.request_records(logs, id)`).
    """
    records = _frames._eager(chain).sort(f.TIMESTAMP)
    if records.is_empty():
        return empty_figure("Call chain", "no log lines for this request id")
    request_id = records[f.REQUEST_ID][0]
    rows: list[dict[str, Any]] = []
    received = records.filter(pl.col(f.EVENT) == f.EV_REQUEST_RECEIVED)
    sent = records.filter(pl.col(f.EVENT) == f.EV_RESPONSE_SENT)
    if not sent.height:  # version 3: a tools/call's one line closes it
        sent = records.filter(request_done())
    if sent.height:
        end = sent[f.TIMESTAMP][0]
        duration = sent[f.DURATION_MS][0] or 0.0
        start = received[f.TIMESTAMP][0] if received.height else end - _ms(duration)
        label = str(records[f.METHOD].drop_nulls().first() or "request")
        rows.append(_row(label, start, end, sent.row(0, named=True), depth=0))
    for call in records.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL).iter_rows(named=True):
        end = call[f.TIMESTAMP]
        rows.append(
            _row(f"tool {call[f.TOOL_NAME]}", end - _ms(call[f.DURATION_MS] or 0), end, call, depth=1)
        )
    for n, down in enumerate(
        records.filter(pl.col(f.EVENT) == f.EV_DOWNSTREAM_CALL).iter_rows(named=True), 1
    ):
        end = down[f.TIMESTAMP]
        rows.append(_row(f"{down[f.SERVICE]} #{n}", end - _ms(down[f.DURATION_MS] or 0), end, down, depth=2))
    if not rows:
        return empty_figure(f"Call chain {request_id}", "this request has no timed steps")
    origin = min(r["start"] for r in rows)
    go = plotly_go()
    fig = go.Figure(
        go.Bar(
            orientation="h",
            y=[_indent(r) for r in rows],
            base=[(r["start"] - origin).total_seconds() * 1000 for r in rows],
            x=[max(r["ms"], 0.05) for r in rows],
            marker_color=[r["color"] for r in rows],
            customdata=[[r["ms"], r["status"], r["error"] or ""] for r in rows],
            hovertemplate=_WATERFALL_HOVER,
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="step")
    fig.update_xaxes(title_text="ms since the request arrived", rangemode="tozero")
    for r in rows:
        if r["error"]:
            fig.add_annotation(
                x=(r["end"] - origin).total_seconds() * 1000,
                y=_indent(r),
                text=f"✖ {shorten(r['error'])}",
                showarrow=False,
                xanchor="left",
                font={"color": ERROR_COLOR},
            )
    return styled(fig, f"Call chain {request_id}", height=max(220, 60 + 40 * len(rows)), showlegend=False)


def _indent(row: dict[str, Any]) -> str:
    return ("\u2003" * 2 * (row["depth"] - 1) + "└ " if row["depth"] else "") + str(row["label"])


def _ms(value: float) -> timedelta:
    return timedelta(milliseconds=value)


def _row(label: str, start: datetime, end: datetime, record: dict[str, Any], *, depth: int) -> dict[str, Any]:
    failed = record.get(f.STATUS) == f.FAILURE
    color = ERROR_COLOR if failed else (DOWNSTREAM_COLOR if depth == 2 else OK_COLOR)
    return {
        "label": label,
        "start": start,
        "end": end,
        "ms": (end - start).total_seconds() * 1000,
        "status": record.get(f.STATUS) or "",
        "error": record.get(f.ERROR),
        "color": color,
        "depth": depth,
    }


def latency_percentiles(
    logs: Frame,
    *,
    every: str = "5s",
    tools: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> go.Figure:
    """Tool-call latency p50/p95/p99 per tool over time (colour per tool, dash per percentile)."""
    table = _frames.latency_table(logs, every=every, tools=tools, start=start, end=end)
    title = "Tool latency percentiles"
    if table.is_empty():
        return empty_figure(title, "no tool calls in this selection")
    # Two percentiles of the busiest three tools: six lines at most; `tools=` picks others.
    busiest = (
        table.group_by(f.TOOL_NAME).agg(pl.col("calls").sum()).sort("calls", f.TOOL_NAME, descending=[True, False])
    )
    shown = busiest[f.TOOL_NAME].head(MAX_SERIES // 2).to_list()
    go = plotly_go()
    fig = go.Figure()
    palette = colors()
    for i, tool in enumerate(shown):
        rows = table.filter(pl.col(f.TOOL_NAME) == tool).sort("bucket")
        for name in ("p50", "p95"):
            fig.add_trace(
                go.Scatter(
                    x=rows["bucket"],
                    y=rows[name],
                    mode=line_mode(rows.height),
                    name=f"{tool} {name}",
                    legendgroup=str(tool),
                    line={"color": palette[i % len(palette)], "dash": _DASHES[name]},
                    customdata=rows["calls"],
                    hovertemplate=f"{tool} {name}: " + _LATENCY_HOVER,
                )
            )
    hidden = busiest.height - len(shown)
    if hidden:
        title += f" (busiest {len(shown)} tools; {hidden} more with tools=[...])"
    fig.update_yaxes(title_text="ms (log scale)", type="log")
    fig.update_xaxes(title_text=TIME_AXIS)
    return styled(fig, title)


def error_heatmap(logs: Frame, *, every: str = "5s") -> go.Figure:
    """Share of failed calls, tool by time bucket: an outage is a red column, a broken tool a red row."""
    table = _frames.error_rates(logs, every=every).filter(pl.col("calls") > 0)  # refusals alone: no rate
    title = "Error rate by tool"
    if table.is_empty():
        return empty_figure(title, "no tool calls")
    wide = table.pivot(on=f.TOOL_NAME, index="bucket", values="error_rate").sort("bucket")
    calls = table.pivot(on=f.TOOL_NAME, index="bucket", values="calls").sort("bucket")
    tools = [c for c in wide.columns if c != "bucket"]
    go = plotly_go()
    fig = go.Figure(
        go.Heatmap(
            x=wide["bucket"],
            y=tools,
            z=[wide[t].to_list() for t in tools],
            customdata=[calls[t].to_list() for t in tools],
            zmin=0,
            zmax=1,
            colorscale="Reds",
            colorbar={"title": "calls failed", "tickformat": ".0%"},
            hovertemplate="%{y}<br>%{x}<br>%{z:.0%} of %{customdata} calls failed<extra></extra>",
        )
    )
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text="tool")
    return styled(fig, title, height=max(250, 80 + 45 * len(tools)))


def _severity_of_calls(calls: pl.DataFrame, episodes: pl.DataFrame) -> pl.Series:
    """For each call, the severity of the worst loop episode it belongs to ("" when none)."""
    if episodes.is_empty():
        return pl.Series("severity", [""] * calls.height)
    members = (
        episodes.select("severity", pl.col("request_ids").alias(f.REQUEST_ID))
        .explode(f.REQUEST_ID)
        .with_columns(pl.col("severity").replace_strict(_SEVERITY_RANK, default=9).alias("_rank"))
        .sort("_rank")
        .unique(f.REQUEST_ID, keep="first")
        .drop("_rank")
    )
    joined = calls.select(f.REQUEST_ID).join(members, on=f.REQUEST_ID, how="left", maintain_order="left")
    return joined["severity"].fill_null("")


def loop_timeline(
    logs: Frame, *, episodes: pl.DataFrame | None = None, episode: int | None = None
) -> go.Figure:
    """Every call as a point (caller by time), loop episodes as bands by severity; `episode` zooms on one."""
    calls = _frames.tool_calls(logs)
    if episodes is None:
        episodes = _frames.loop_episodes(logs)
    title = "Loop episodes"
    if calls.is_empty():
        return empty_figure(title, "no tool calls")
    go = plotly_go()
    fig = go.Figure()
    calls = calls.with_columns(_severity_of_calls(calls, episodes).alias("severity"))
    for severity in ("", "low", "medium", "high"):
        name = f"{severity}-severity loop" if severity else "calls"
        part = calls.filter(pl.col("severity") == severity)
        if part.is_empty():
            continue
        fig.add_trace(
            go.Scatter(
                x=part[f.TIMESTAMP],
                y=part[f.CALLER_ID].fill_null("(unknown)"),
                mode="markers",
                name=name,
                marker={"color": SEVERITY_COLORS[severity], "size": 6, "opacity": 0.75},
                customdata=part.select(f.TOOL_NAME, f.REQUEST_ID).rows(),
                hovertemplate="%{y}: %{customdata[0]}<br>%{customdata[1]}<br>%{x}<extra></extra>",
            )
        )
    # The bands and labels go in together: plotly checks every shape already there each time one is
    # added (`add_vrect`), which took minutes for a few hundred episodes.
    bands: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    for row in episodes.iter_rows(named=True):
        loud = row["severity"] == "high" or row["episode"] == episode
        color = SEVERITY_COLORS.get(row["severity"], ERROR_COLOR)
        bands.append({"type": "rect", "xref": "x", "yref": "y domain", "x0": row["start"], "x1": row["end"],
                      "y0": 0, "y1": 1, "fillcolor": color, "opacity": 0.15 if loud else 0.06,
                      "line": {"width": 0}})
        if loud:
            labels.append({"x": row["start"], "y": row[f.CALLER_ID] or "(unknown)", "yshift": 14, "xanchor": "left",
                           "showarrow": False, "text": f"#{row['episode']} {row['kind']} ×{row['count']}",
                           "font": {"color": color}})
    if bands:
        fig.update_layout(shapes=bands, annotations=labels)
    if episode is not None:
        chosen = episodes.filter(pl.col("episode") == episode)
        if chosen.height:
            start, end = chosen["start"][0], chosen["end"][0]
            pad = max((end - start) * 0.25, _ms(1000))
            fig.update_xaxes(range=[start - pad, end + pad])
            title = f"Loop episode #{episode}"
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text="caller")
    return styled(fig, title, height=350)


def caller_rate(logs: Frame, *, every: str = "5s") -> go.Figure:
    """Tool calls per second for each caller: who is hammering the server, and since when."""
    table = _frames.caller_rates(logs, every=every)
    refused = _frames.refusals(logs, every=every)
    title = "Request rate per caller"
    if table.is_empty() and refused.is_empty():
        return empty_figure(title, "no tool calls")
    seconds = _frames.bucket_seconds(every)
    go = plotly_go()
    fig = go.Figure()
    palette = colors()
    served = top_series(table, f.CALLER_ID, "calls", n=MAX_SERIES - 2)
    served = served.group_by(f.CALLER_ID, "bucket").agg(pl.col("calls").sum()).sort("bucket")
    # Busiest peak first, ties by name: the same logs draw the same figure.
    order = (
        served.group_by(f.CALLER_ID).agg(pl.col("calls").max())
        .sort("calls", f.CALLER_ID, descending=[True, False])[f.CALLER_ID]
    )
    for i, caller in enumerate(order):
        rows = served.filter(pl.col(f.CALLER_ID) == caller)
        fig.add_trace(
            go.Scatter(
                x=rows["bucket"], y=rows["calls"] / seconds, mode=line_mode(rows.height), name=str(caller),
                line={"shape": "hv", "color": palette[i % len(palette)]},
                hovertemplate=f"{caller}: " + "%{y:.1f} calls/s<br>%{x}<extra></extra>",
            )
        )
    if refused.height:
        per_bucket = (
            refused.group_by("bucket").agg(pl.col("refused").sum(), pl.col("subject").unique().sort()).sort("bucket")
        )
        who = sorted(set(refused["subject"]))
        name = "refused: " + shorten(", ".join(who), 40)
        fig.add_trace(
            go.Scatter(
                x=per_bucket["bucket"], y=per_bucket["refused"] / seconds, mode=line_mode(per_bucket.height),
                name=name, line={"shape": "hv", "color": ERROR_COLOR, "dash": "dash"}, yaxis="y2",
                customdata=[", ".join(s) for s in per_bucket["subject"]],
                hovertemplate="refused: %{y:.1f} requests/s<br>%{customdata}<br>%{x}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text=TIME_AXIS)
    return styled(
        fig,
        title + " (tool calls served; requests refused on the right axis)",
        legend={"x": 1.1},  # past the right axis
        yaxis={"title": "tool calls / s", "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "refused requests / s", "font": {"color": ERROR_COLOR}},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            "tickmode": "auto",
        },
    )


def sessions_over_time(logs: Frame, *, every: str = "5s") -> go.Figure:
    """Active and new sessions per bucket, next to requests that carried no session at all."""
    table = _frames.sessions_over_time(logs, every=every)
    title = f"Sessions over time (per {every} bucket)"
    if table.is_empty():
        return empty_figure(title, "no requests")
    most = int(table.select(pl.max_horizontal("active_sessions", "new_sessions").max()).item() or 0)
    go = plotly_go()
    fig = go.Figure(
        [
            go.Bar(
                x=table["bucket"], y=table["active_sessions"], name="active sessions", marker_color=OK_COLOR
            ),
            go.Bar(x=table["bucket"], y=table["new_sessions"], name="new sessions", marker_color="#2ca02c"),
            go.Scatter(
                x=table["bucket"],
                y=table["sessionless_requests"],
                name="requests without a session",
                mode=line_mode(table.height),
                yaxis="y2",
                line={"color": "#ff7f0e"},
            ),
        ]
    )
    return styled(
        fig,
        title,
        barmode="group",
        legend={"x": 1.1},  # past the right axis
        xaxis={"title": TIME_AXIS},
        yaxis={"title": "sessions", "rangemode": "tozero", "dtick": 1 if most <= 10 else None},
        yaxis2={
            "title": "sessionless requests",
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "tickmode": "auto",
            "showgrid": False,
        },
    )


def runs_timeline(
    logs: Frame, *, gap: timedelta = timedelta(minutes=5), episodes: pl.DataFrame | None = None
) -> go.Figure:
    """One row per agent run (`analysis.runs`: session, baggage, trace or caller+gap), calls as marks,
    failed calls red, calls in a high-severity loop marked."""
    calls = _frames.run_calls(logs, gap=gap)
    title = "Agent runs"
    if calls.is_empty():
        return empty_figure(title, "no tool calls")
    if episodes is None:
        episodes = _frames.loop_episodes(logs)
    summary = _frames.run_summary(logs, gap=gap)
    go = plotly_go()
    fig = go.Figure()
    labels = {r["run_id"]: _run_label(r) for r in summary.iter_rows(named=True)}
    fig.add_trace(
        go.Bar(
            orientation="h",
            y=[labels[r] for r in summary["run_id"]],
            base=summary["start"],
            x=[(e - s).total_seconds() * 1000 for s, e in zip(summary["start"], summary["end"], strict=True)],
            marker_color="rgba(31,119,180,0.15)",
            name="run",
            hoverinfo="skip",
        )
    )
    calls = calls.filter(pl.col("run_id").is_in(list(labels))).with_columns(
        _severity_of_calls(calls, episodes).alias("severity")
    )
    for name, part, color in (
        ("call", calls.filter((pl.col("severity") != "high") & ~pl.col("failed")), OK_COLOR),
        ("failed call", calls.filter((pl.col("severity") != "high") & pl.col("failed")), ERROR_COLOR),
        ("call in a high-severity loop", calls.filter(pl.col("severity") == "high"), SEVERITY_COLORS["high"]),
    ):
        if part.is_empty():
            continue
        fig.add_trace(
            go.Scatter(
                x=part[f.TIMESTAMP],
                y=[labels[r] for r in part["run_id"]],
                mode="markers",
                name=name,
                marker={"color": color, "symbol": "line-ns-open", "size": 10, "line": {"width": 2}},
                customdata=part.select(f.TOOL_NAME, f.REQUEST_ID, f.STATUS).rows(),
                hovertemplate="%{customdata[0]} %{customdata[2]}<br>%{customdata[1]}<br>%{x}<extra></extra>",
            )
        )
    fig.update_xaxes(type="date", title_text=TIME_AXIS)
    fig.update_yaxes(autorange="reversed", title_text="run (caller · rule id)")
    return styled(fig, title, height=max(300, 80 + 28 * summary.height))


def _run_label(run: dict[str, Any]) -> str:
    """Caller, rule and a run id short enough for an axis label (session ids and gap keys are long)."""
    run_id: str = run["run_id"].removeprefix(f"{run['rule']}:")
    short = run_id if len(run_id) <= 18 else run_id[:15] + "…"
    return f"{run[f.CALLER_ID]} · {run['rule']} {short}"
