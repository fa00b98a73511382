"""A standalone HTML report of a log set: the notebook's figures on one page, plotly.js embedded once.

The page needs no network and no kernel: open it from a ticket or a mail. The
same figures can be written as PNG files (kaleido drives a headless Chromium
found on PATH).
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
from mcptrace.notebook import _frames, _plots
from mcptrace.notebook._deps import require

#: Waterfalls included for the requests that look worst (failed first, then slowest).
WORST_REQUESTS = 3


@dataclass
class Report:
    """The figures of one report, by a stable name (used for PNG file names), and the page around them."""

    title: str
    summary: list[str]
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)

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
        for name, fig in self.figures.items():
            parts.append(f"<section id='{name}'>")
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
    paths: Sequence[str | os.PathLike[str]], *, every: str = "5s", title: str | None = None
) -> Report:
    """Read the logs at `paths` and lay out the report's figures."""
    try:
        _frames.bucket_seconds(every)
    except ValueError as exc:
        raise MCPTraceError(str(exc)) from None
    logs = _frames.load_logs(*paths)
    calls = _frames.tool_calls(logs)
    if logs.is_empty():
        raise MCPTraceError("the logs hold no records to report on")
    start, end = _frames.time_range(logs)
    episodes = _frames.loop_episodes(logs)
    failed = calls.filter(pl.col("failed"))
    summary = [
        f"{logs.height} log lines from {', '.join(str(p) for p in paths)}",
        f"{start:%Y-%m-%d %H:%M:%S} – {end:%Y-%m-%d %H:%M:%S} UTC",
        f"{calls.height} tool calls by {calls[f.CALLER_ID].n_unique()} callers; {failed.height} failed",
        f"{episodes.height} loop episode(s)",
    ]
    report = Report(title or f"mcptrace report {start:%Y-%m-%d %H:%M} UTC", summary)
    report.figures["errors"] = _plots.error_heatmap(logs, every=every)
    report.figures["latency"] = _plots.latency_percentiles(logs, every=every)
    report.figures["callers"] = _plots.caller_rate(logs, every=every)
    report.figures["loops"] = _plots.loop_timeline(logs, episodes=episodes)
    if episodes.height:
        report.tables["loops"] = episodes.with_columns(
            pl.col("request_ids").list.head(3).list.join(", ").alias("first request ids")
        ).drop("request_ids")
    report.figures["runs"] = _plots.runs_timeline(logs, episodes=episodes)
    report.figures["sessions"] = _plots.sessions_over_time(logs, every=every)
    worst = calls.sort("failed", f.DURATION_MS, descending=True)[f.REQUEST_ID].head(WORST_REQUESTS)
    for n, request_id in enumerate(worst, 1):
        report.figures[f"request-{n}"] = _plots.waterfall(_frames.request_records(logs, request_id))
    return report


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
    return "" if value is None else str(value)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
section { margin: 24px 0; border-top: 1px solid #eee; padding-top: 8px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 4px 8px; text-align: left; }
footer { color: #888; font-size: 12px; margin-top: 32px; }
"""
