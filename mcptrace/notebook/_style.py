"""How every figure looks: one template, titled axes, at most six series, labels cut with an ellipsis.

Shared by the views of `_plots` and `_findings`, so a rule for readability is
written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from mcptrace.notebook._deps import require

if TYPE_CHECKING:
    import plotly.graph_objects as go

ERROR_COLOR = "#d62728"
OK_COLOR = "#1f77b4"
DOWNSTREAM_COLOR = "#7f7f7f"


def plotly_go() -> Any:
    return require("plotly.graph_objects")


#: Series a figure draws at most before it folds the rest into "other".
MAX_SERIES = 6
#: Characters of a label shown before an ellipsis (the whole text stays in the hover).
LABEL_CHARS = 80
TIME_AXIS = "time (UTC)"


def styled(fig: go.Figure, title: str, **extra: Any) -> go.Figure:
    # the legend beside the plot, never over an axis title; six entries at most fit any height
    legend = {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top", **extra.pop("legend", {})}
    fig.update_layout(
        title=title,
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend=legend,
        **extra,
    )
    fig.update_yaxes(automargin=True)
    return fig


def shorten(text: str, limit: int = LABEL_CHARS) -> str:
    """`text` cut to `limit` characters, with an ellipsis when it was cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def line_mode(points: int) -> str:
    """Lines between points, with markers where there are few points (a single one stays visible)."""
    return "lines+markers" if points <= 60 else "lines"


def top_series(table: pl.DataFrame, key: str, weight: str, n: int = MAX_SERIES - 1) -> pl.DataFrame:
    """`table` with every `key` outside the `n` with the highest peak of `weight` renamed "other"
    (the peak, not the total: a short burst is what a reader looks for)."""
    ranked = table.group_by(key).agg(pl.col(weight).max()).sort(weight, key, descending=[True, False])
    keep = ranked[key].head(n).to_list()
    if ranked.height <= n + 1:
        return table
    return table.with_columns(pl.when(pl.col(key).is_in(keep)).then(pl.col(key)).otherwise(pl.lit("other")).alias(key))


def empty_figure(title: str, why: str) -> go.Figure:
    fig = plotly_go().Figure()
    fig.add_annotation(text=why, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return styled(fig, title, xaxis={"visible": False}, yaxis={"visible": False})


def colors() -> list[str]:
    colors: list[str] = require("plotly.express").colors.qualitative.Plotly
    return colors
