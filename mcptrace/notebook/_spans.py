"""Spans next to log lines: read exported spans and join them to the logs on trace id and request id.

There is no span file format in OTLP itself; this reads the flat JSON lines
that `sample_logs/generate.py` writes from what an OTLP receiver got (one span
per line: `trace_id, span_id, parent_span_id, name, kind, start, end,
duration_ms, status, attributes`). The join keys are the ones the server puts
on both sides: `trace_id`/`span_id` on every log line written inside a span,
and `mcptrace.mcp_request_id` on every SERVER span.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from mcptrace import _fields as f
from mcptrace._errors import LogReadError
from mcptrace.notebook._frames import Frame, _eager

#: Span columns after `load_spans` (attributes the joins need are lifted out of the map).
SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start", "end", "duration_ms", "status",
    f.REQUEST_ID, "service", "error_type",
)


def load_spans(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Spans from a JSON-lines file, with start/end as UTC datetimes and the request id as a column."""
    try:
        raw = pl.read_ndjson(Path(path))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise LogReadError(f"cannot read spans from {path}: {exc}") from None
    attributes = raw.schema.get("attributes")
    fields = {field.name for field in attributes.fields} if isinstance(attributes, pl.Struct) else set()

    def attribute(name: str, alias: str) -> pl.Expr:
        if name in fields:
            return pl.col("attributes").struct.field(name).alias(alias)
        return pl.lit(None, dtype=pl.String).alias(alias)

    timestamp = pl.Datetime("us", "UTC")
    return raw.select(
        "trace_id", "span_id", "parent_span_id", "name", "kind",
        pl.col("start").str.to_datetime(time_unit="us", time_zone="UTC").cast(timestamp),
        pl.col("end").str.to_datetime(time_unit="us", time_zone="UTC").cast(timestamp),
        "duration_ms", "status",
        attribute(f.ATTR_REQUEST_ID, f.REQUEST_ID),
        attribute("peer.service", "service"),
        attribute(f.ATTR_ERROR_TYPE, "error_type"),
    ).sort("start")


def spans_with_requests(spans: pl.DataFrame) -> pl.DataFrame:
    """Every span with the request id of its SERVER span (CLIENT spans carry none of their own)."""
    server = spans.filter(pl.col("kind") == "server").select(
        "trace_id", pl.col("span_id").alias("parent_span_id"), pl.col(f.REQUEST_ID).alias("_parent_request")
    )
    return (
        spans.join(server, on=["trace_id", "parent_span_id"], how="left")
        .with_columns(pl.coalesce(f.REQUEST_ID, "_parent_request").alias(f.REQUEST_ID))
        .drop("_parent_request")
    )


def join_logs(logs: Frame, spans: pl.DataFrame) -> pl.DataFrame:
    """Log lines next to the span that was active when each was written (`trace_id` + `span_id`).

    Lines written outside any span (start-up, refusals before the MCP layer) keep
    null span columns; `span_request_id` is the request id the span carries, so
    `span_request_id == mcp_request_id` checks both sides tell the same story.
    """
    columns = spans_with_requests(spans).select(
        "trace_id", "span_id", pl.col("name").alias("span_name"), pl.col("kind").alias("span_kind"),
        pl.col("duration_ms").alias("span_ms"), pl.col("status").alias("span_status"),
        pl.col(f.REQUEST_ID).alias("span_request_id"),
    )
    return _eager(logs).join(columns, on=["trace_id", "span_id"], how="left", maintain_order="left")
