"""`Explorer`: one ipywidgets panel to walk an incident without writing code.

Four parts, each redrawn only when its own controls change: the logs to read;
a request-id box that shows that request's waterfall and log lines; a tool
picker and time-range slider over the latency percentiles; the loop episodes,
one of which can be opened. Works wherever ipywidgets do (JupyterLab, VS Code).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import MCPTraceError
from mcptrace.notebook import _frames, _plots
from mcptrace.notebook._deps import require

#: Columns shown in the records table under a waterfall.
RECORD_COLUMNS = (
    f.TIMESTAMP,
    f.EVENT,
    f.LEVEL,
    f.METHOD,
    f.TOOL_NAME,
    f.CALLER_ID,
    f.SESSION_ID,
    f.SERVICE,
    f.DURATION_MS,
    f.STATUS,
    f.ERROR,
)


class Explorer:
    """Interactive views over one set of logs. Display it (last line of a cell) to use it.

    The figures it last drew are kept in `figures` (by part name) so code in
    the notebook, or a test, can read what the reader is looking at.
    """

    def __init__(
        self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, every: str = "5s"
    ):
        w = require("ipywidgets")
        self.every = every
        self.logs: pl.DataFrame = pl.DataFrame()
        self.episodes: pl.DataFrame = pl.DataFrame()
        self.figures: dict[str, Any] = {}
        self._loading = False
        names = [str(paths)] if isinstance(paths, str | os.PathLike) else [str(p) for p in paths]

        self.paths_box = w.Text(value=", ".join(names), description="logs", layout=w.Layout(width="60%"))
        self.load_button = w.Button(description="Load", button_style="primary")
        self.status = w.HTML()
        self.request_box = w.Combobox(
            description="request id", placeholder="req-…", ensure_option=False, layout=w.Layout(width="50%")
        )
        self.request_out = w.Output()
        self.request_lines = w.Output()
        self.tool_picker = w.SelectMultiple(description="tools", rows=5)
        self.time_slider = w.SelectionRangeSlider(
            description="time", options=["-"], layout=w.Layout(width="90%"), continuous_update=False
        )
        self.latency_out = w.Output()
        self.episode_list = w.Select(description="loops", rows=5, layout=w.Layout(width="70%"))
        self.episode_out = w.Output()
        self.episode_calls = w.Output()

        self.load_button.on_click(lambda _: self.load())
        self.request_box.observe(lambda change: self.show_request(change["new"]), names="value")
        self.tool_picker.observe(lambda _: self.update_latency(), names="value")
        self.time_slider.observe(lambda _: self.update_latency(), names="index")
        self.episode_list.observe(lambda change: self.open_episode(change["new"]), names="value")

        def section(title: str) -> Any:
            return w.HTML(f"<h3 style='margin:12px 0 4px'>{title}</h3>")

        self.widget = w.VBox(
            [
                w.HBox([self.paths_box, self.load_button]),
                self.status,
                section("Request"),
                self.request_box,
                self.request_out,
                self.request_lines,
                section("Latency"),
                w.HBox([self.tool_picker]),
                self.time_slider,
                self.latency_out,
                section("Loop episodes"),
                self.episode_list,
                self.episode_out,
                self.episode_calls,
            ]
        )
        self.widget.add_class("mcptrace-explorer")
        self.load()

    def _ipython_display_(self) -> None:
        _show(self.widget)

    # -- the logs ----------------------------------------------------------
    def load(self) -> None:
        """(Re)read the logs named in the paths box and reset every control."""
        names = [p.strip() for p in self.paths_box.value.split(",") if p.strip()]
        try:
            self.logs = _frames.load_logs(*names)
        except MCPTraceError as exc:
            self.status.value = f"<b style='color:#d62728'>cannot load logs:</b> {_escape(str(exc))}"
            return
        self._loading = True
        try:
            self._reset_controls()
        finally:
            self._loading = False
        self.update_latency()
        if self.episodes.height:
            self.open_episode(self.episodes["episode"][0])

    def _reset_controls(self) -> None:
        calls = _frames.tool_calls(self.logs)
        self.episodes = _frames.loop_episodes(self.logs)
        start, end = _frames.time_range(self.logs)
        self.status.value = (
            f"{self.logs.height} lines, {calls.height} tool calls, {calls[f.CALLER_ID].n_unique()} callers, "
            f"{start:%Y-%m-%d %H:%M:%S}–{end:%H:%M:%S} UTC, {self.episodes.height} loop episode(s)"
        )
        failed_first = calls.sort("failed", f.DURATION_MS, f.REQUEST_ID, descending=[True, True, False])[
            f.REQUEST_ID
        ].unique(maintain_order=True)
        self.request_box.options = failed_first.head(500).to_list()
        tools = calls[f.TOOL_NAME].drop_nulls().unique().sort().to_list()
        self.tool_picker.options = tools
        self.tool_picker.value = tuple(tools)
        buckets = (
            pl.datetime_range(start, end, self.every, eager=True).dt.truncate(self.every).unique().sort()
        )
        stamps = [*buckets.to_list(), end]
        self.time_slider.options = [(f"{t:%H:%M:%S}", t) for t in stamps]
        self.time_slider.index = (0, len(stamps) - 1)
        self.episode_list.options = [
            (
                f"#{r['episode']}  {r['severity']:<6} {r['kind']:<14} {r['caller_id']} → {r['tool_name']} "
                f"×{r['count']}  {r['start']:%H:%M:%S}–{r['end']:%H:%M:%S}",
                r["episode"],
            )
            for r in self.episodes.iter_rows(named=True)
        ]
        if self.episodes.height:
            self.episode_list.value = self.episodes["episode"][0]

    # -- one request -------------------------------------------------------
    def show_request(self, request_id: str) -> None:
        """Draw the waterfall of `request_id` and list its log lines."""
        request_id = (request_id or "").strip()
        if not request_id:
            return
        records = _frames.request_records(self.logs, request_id)
        self.request_lines.clear_output()
        with self.request_out:
            self.request_out.clear_output()
            if records.is_empty():
                print(f"no log lines with mcp_request_id {request_id!r}")
                self.figures.pop("waterfall", None)
                return
            self.figures["waterfall"] = fig = _plots.waterfall(records)
            _show(fig)
        with self.request_lines:
            _show(_table(records.select(c for c in RECORD_COLUMNS if c in records.columns)))

    # -- latency -----------------------------------------------------------
    def update_latency(self) -> None:
        """Redraw the percentile plot for the picked tools and time range."""
        if self._loading or self.logs.is_empty():
            return
        low, high = self.time_slider.value
        fig = _plots.latency_percentiles(
            self.logs,
            every=self.every,
            tools=list(self.tool_picker.value),
            start=low,
            end=high,
        )
        self.figures["latency"] = fig
        with self.latency_out:
            self.latency_out.clear_output()
            _show(fig)

    # -- loops -------------------------------------------------------------
    def open_episode(self, episode: int | None) -> None:
        """Zoom the loop timeline on one episode and list its calls."""
        if self._loading or episode is None:
            return
        chosen = self.episodes.filter(pl.col("episode") == episode)
        fig = _plots.loop_timeline(self.logs, episodes=self.episodes, episode=episode)
        self.figures["loop"] = fig
        with self.episode_out:
            self.episode_out.clear_output()
            _show(fig)
        with self.episode_calls:
            self.episode_calls.clear_output()
            _show(_table(chosen.drop("request_ids")))
            if chosen.height:
                ids = chosen["request_ids"][0].to_list()
                print(f"{len(ids)} calls; first request ids: {', '.join(ids[:5])}")


def _table(frame: pl.DataFrame) -> Any:
    """A table as an HTML widget, shown the same in every frontend.

    Figures and tables go to separate Output widgets: nbclient waits out its whole
    cell timeout when anything is displayed after a plotly figure in one Output.
    """
    return require("ipywidgets").HTML(frame._repr_html_())


def _show(obj: object) -> None:
    """Display `obj` in the current output (a notebook cell, or the Output widget being written to)."""
    from IPython.display import display

    display(obj)  # type: ignore[no-untyped-call]


def _escape(text: str) -> str:
    import html

    return html.escape(text)
