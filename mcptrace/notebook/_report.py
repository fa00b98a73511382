"""A standalone HTML report of a log set: the findings first, then the figures behind them.

The page opens with what went wrong (`analysis.incidents`, one row per cause,
most severe first), each row linked to the figures that show it: the call chain
of its most telling request and the overview where it stands out. The page
needs no network and no kernel: open it from a ticket or a mail. The same
figures can be written as PNG files (kaleido drives a headless Chromium found
on PATH).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import MCPTraceError
from mcptrace._version import __version__
from mcptrace.notebook import _findings, _frames, _plots
from mcptrace.notebook._deps import require

#: The overview figure in which each kind of incident stands out.
KIND_FIGURES = {
    "dependency_outage": "errors",
    "error_spike": "errors",
    "latency_regression": "latency",
    "agent_loop": "loops",
    "retry_storm": "loops",
    "rate_limit_storm": "refusals",
    "auth_failures": "refusals",
    "restart": "sessions",
    "resource_refused": "incidents",
}
_FIGURE_TITLES = {
    "errors": "error rate",
    "latency": "latency",
    "loops": "loops",
    "refusals": "refusals",
    "sessions": "sessions",
    "incidents": "timeline",
}


@dataclass
class Report:
    """The figures of one report, by a stable name (used for PNG file names), and the page around them."""

    title: str
    summary: list[str]
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: `analysis.incidents` rows, most severe first; the page starts with them.
    findings: pl.DataFrame | None = None
    #: For each finding (by position), the figures that show it.
    links: list[list[str]] = field(default_factory=list)

    def to_html(self) -> str:
        offline = require("plotly.offline")
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            f"<script type='text/javascript'>{offline.get_plotlyjs()}</script>",
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in self.summary) + "</ul>",
        ]
        if self.findings is not None:
            parts.append(_findings_table(self.findings, self.links))
        for name, fig in self.figures.items():
            parts.append(f"<section id='{html.escape(name)}'>")
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}"))
            if name in self.tables:
                parts.append(_table(self.tables[name]))
            parts.append("</section>")
        parts.append(f"<footer>mcptrace {__version__}</footer></body></html>")
        return "\n".join(parts)

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_html(), encoding="utf-8")
        return out

    def write_pngs(
        self, directory: str | os.PathLike[str], *, width: int = 1200, height: int = 600
    ) -> list[Path]:
        """Every figure as `DIRECTORY/NAME.png` (kaleido; needs Chrome or Chromium on PATH)."""
        pio = require("plotly.io")
        require("kaleido")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{name}.png" for name in self.figures]
        try:
            pio.write_images(list(self.figures.values()), paths, width=width, height=height)
        except (RuntimeError, ValueError, OSError) as exc:
            raise MCPTraceError(
                f"PNG export failed (kaleido needs chromium or chrome on PATH): {exc}"
            ) from None
        return paths


def build_report(
    paths: Sequence[str | os.PathLike[str]], *, every: str = "5s", title: str | None = None,
    replicas: Sequence[str] | None = None,
) -> Report:
    """Read the logs at `paths` (only `replicas` of a fleet dataset, when given) and lay out the report's figures."""
    try:
        _frames.bucket_seconds(every)
    except ValueError as exc:
        raise MCPTraceError(str(exc)) from None
    logs = _frames.load_logs(*paths, replicas=replicas)
    calls = _frames.tool_calls(logs)
    if logs.is_empty():
        raise MCPTraceError("the logs hold no records to report on")
    start, end = _frames.time_range(logs)
    episodes = _frames.loop_episodes(logs)
    findings = _frames.incident_table(logs)
    failed = calls.filter(pl.col("failed"))
    summary = [
        f"{findings.height} incident(s) found; the most severe first below",
        f"{logs.height} log lines from {', '.join(str(p) for p in paths)}"
        + (f" (replica {', '.join(replicas)})" if replicas else ""),
        f"{start:%Y-%m-%d %H:%M:%S} – {end:%Y-%m-%d %H:%M:%S} UTC",
        f"{calls.height} tool calls by {calls[f.CALLER_ID].n_unique()} callers; {failed.height} failed",
        f"{episodes.height} loop episode(s)",
    ]
    report = Report(title or f"mcptrace report {start:%Y-%m-%d %H:%M} UTC", summary, findings=findings)
    report.figures["incidents"] = _findings.incident_timeline(findings)
    # One call chain per incident whose requests reached a tool: its most telling request.
    with_chain = set(calls[f.REQUEST_ID].drop_nulls())
    shown: set[str] = set()
    for n, row in enumerate(findings.iter_rows(named=True), 1):
        links = [f"incident-{n}"] if _add_chain(report, logs, n, row, with_chain, shown) else []
        report.links.append([*links, KIND_FIGURES.get(row["kind"], "incidents")])
    report.figures["errors"] = _plots.error_heatmap(logs, every=every)
    report.figures["latency"] = _plots.latency_percentiles(logs, every=every)
    report.figures["callers"] = _plots.caller_rate(logs, every=every)
    report.figures["refusals"] = _findings.refusals_over_time(logs, every=every)
    report.figures["loops"] = _plots.loop_timeline(logs, episodes=episodes)
    if episodes.height:
        report.tables["loops"] = _loop_table(episodes)
    report.figures["runs"] = _plots.runs_timeline(logs, episodes=episodes)
    report.figures["sessions"] = _plots.sessions_over_time(logs, every=every)
    return report


def _add_chain(
    report: Report, logs: pl.DataFrame, n: int, row: dict[str, Any], with_chain: set[str], shown: set[str]
) -> bool:
    """Add the waterfall of the finding's first request that has a call chain, once per request."""
    request_id = next((r for r in row["request_ids"] or [] if r in with_chain), None)
    if request_id is None or request_id in shown:
        return False
    shown.add(request_id)
    fig = _plots.waterfall(_frames.request_records(logs, request_id))
    fig.update_layout(title=f"#{n} {row['kind']} ({row['subject']}): call chain {request_id}")
    report.figures[f"incident-{n}"] = fig
    return True


def _link_text(figure: str) -> str:
    return "call chain" if figure.startswith("incident-") else _FIGURE_TITLES.get(figure, figure)


def _loop_table(episodes: pl.DataFrame) -> pl.DataFrame:
    """Loop episodes as a person reads them: times, rounded rates, a few request ids."""
    return episodes.select(
        "episode",
        "kind",
        "severity",
        f.CALLER_ID,
        f.TOOL_NAME,
        "start",
        "end",
        "count",
        "errors",
        pl.col("rate").round(1).alias("calls/min"),
        pl.col("request_ids").list.head(2).list.join(" ").alias("first request ids"),
    )


def _findings_table(findings: pl.DataFrame, links: list[list[str]]) -> str:
    if findings.is_empty():
        return "<section id='findings'><h2>Findings</h2><p>No incident found.</p></section>"
    titles = ("#", "severity", "kind", "subject", "window (UTC)", "what happened", "see")
    head = "".join(f"<th>{h}</th>" for h in titles)
    rows = []
    for n, (row, figures) in enumerate(zip(findings.iter_rows(named=True), links, strict=True), 1):
        window = f"{row['start']:%H:%M:%S}–{row['end']:%H:%M:%S}"
        see = " · ".join(
            f"<a href='#{html.escape(name)}'>{_link_text(name)}</a>" for name in figures
        )
        cells = [str(n), row["severity"], row["kind"], row["subject"], window, row["summary"]]
        rows.append(
            f"<tr class='{html.escape(row['severity'])}'>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + f"<td>{see}</td></tr>"
        )
    return (
        "<section id='findings'><h2>Findings</h2>"
        f"<table class='findings'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _cell(value: object) -> str:
    if hasattr(value, "strftime"):
        return value.strftime("%H:%M:%S.%f")[:-3]  # type: ignore[no-any-return]
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1240px; padding: 0 12px; color: #222; }
section { margin: 24px 0; border-top: 1px solid #eee; padding-top: 8px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
td, th { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; overflow-wrap: break-word; }
table.findings td:not(:nth-child(6)), table.findings th { white-space: nowrap; }
table.findings tr.high td:nth-child(2) { color: #d62728; font-weight: 600; }
table.findings tr.medium td:nth-child(2) { color: #ff7f0e; font-weight: 600; }
footer { color: #888; font-size: 12px; margin-top: 32px; }
"""
