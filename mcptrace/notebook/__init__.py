"""Notebook views of mcptrace logs: plotly figures, an ipywidgets explorer, and the HTML report.

Needs the notebook extra (from a clone `pip install -e '.[notebook]'`); plotly and
ipywidgets are imported on first use, so importing this package is cheap and
says what to install when they are missing.

    from mcptrace.notebook import load_logs, request_records, waterfall
    logs = load_logs("sample_logs/incidents")
    waterfall(request_records(logs, "req-..."))
"""

from mcptrace.notebook._explorer import Explorer
from mcptrace.notebook._frames import (
    caller_rates,
    error_rates,
    latency_table,
    load_logs,
    loop_episodes,
    request_records,
    run_calls,
    run_summary,
    tool_calls,
)
from mcptrace.notebook._plots import (
    caller_rate,
    error_heatmap,
    latency_percentiles,
    loop_timeline,
    runs_timeline,
    sessions_over_time,
    waterfall,
)
from mcptrace.notebook._spans import join_logs, load_spans, spans_with_requests

__all__ = [
    "Explorer",
    "caller_rate",
    "caller_rates",
    "error_heatmap",
    "error_rates",
    "join_logs",
    "latency_percentiles",
    "latency_table",
    "load_logs",
    "load_spans",
    "loop_episodes",
    "loop_timeline",
    "request_records",
    "run_calls",
    "run_summary",
    "runs_timeline",
    "sessions_over_time",
    "spans_with_requests",
    "tool_calls",
    "waterfall",
]
