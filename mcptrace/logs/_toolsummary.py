"""Per-tool calls, errors and every latency, kept beside the index so `stats` needs no polars.

Reading the Parquet index means importing polars, which alone takes longer
than the whole answer should. So when a segment is indexed, its tool calls
are also summed up per tool (calls, errors) and their durations written out,
grouped by tool, as raw little-endian float64 (8 bytes per call: about 20 MB
for a 4 GB log). Each segment's rows are computed by polars when it is
indexed, so a single log file is answered from its manifest alone. Percentiles
do not add up across files, so for a rotated set every duration is kept and
numpy computes them (linear interpolation, as polars does) over all segments
together. Only the whole-log, per-tool question is answered here; a time
range, a caller or windows read the Parquet dataset instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcptrace import _fields as f
from mcptrace.logs._aggregates import DECIMALS, QUANTILES, counts, latency
from mcptrace.logs._loadreport import LoadReport
from mcptrace.logs._manifest import fresh_segments, read_manifest
from mcptrace.logs._sources import Paths, resolve_sources

if TYPE_CHECKING:
    import polars as pl

#: Name of the durations file in a segment's directory.
DURATIONS_FILE = "tool_durations.f8"
#: Key of the summary in a segment's manifest entry.
MANIFEST_KEY = "tool_calls"
STATS_COLUMNS = [f.TOOL_NAME, "calls", "errors", "error_rate", "refused", *QUANTILES]


def summary_input(data: pl.DataFrame) -> pl.DataFrame:
    """What `write_summary` needs of a part of the rows: (tool_name, call, failed, duration_ms, refused)."""
    import polars as pl

    from mcptrace.logs._refusals import is_refusal, refusals  # polars expressions: not for the summary's reader

    call = pl.col(f.EVENT) == f.EV_TOOL_CALL
    return data.filter(call | is_refusal()).select(
        f.TOOL_NAME,
        call.alias("call"),
        (pl.col(f.STATUS) == f.FAILURE).fill_null(False).alias("failed"),
        f.DURATION_MS,
        refusals().cast(pl.Int64).alias("refused"),
    )


def write_summary(calls: pl.DataFrame, directory: Path) -> dict[str, Any]:
    """Write the durations of `calls` (see `summary_input`) and return the manifest entry."""
    import polars as pl

    tools = []
    offset = 0
    call = pl.col("call")
    # The same aggregations as `tool_stats`, so a single file's rows are exactly what it computes.
    rows = (
        calls.group_by(f.TOOL_NAME)
        .agg(
            *counts(pl.col("failed"), call=call, refused=pl.col("refused")),
            *latency(call=call),
            pl.col(f.DURATION_MS).filter(call).drop_nulls().alias("durations"),
        )
        .sort(f.TOOL_NAME, nulls_last=True)
    )
    with open(directory / DURATIONS_FILE, "wb") as out:
        for row in rows.iter_rows(named=True):
            values = pl.Series(row.pop("durations") or [], dtype=pl.Float64).to_numpy()
            out.write(values.astype("<f8", copy=False).tobytes())
            tools.append({**row, "offset": offset, "count": len(values)})
            offset += len(values)
    return {"file": DURATIONS_FILE, "tools": tools}


def indexed_tool_stats(
    paths: Paths = None, *, tools: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], LoadReport] | None:
    """Rows of `tool_stats` for the whole of these logs from a fresh index, or None without one.

    The rows have the same columns and order as `tool_stats(load(paths).frame)`;
    `tools` keeps only those tools (as `--tool` does).
    """
    sources = resolve_sources(paths)
    found = fresh_segments(sources)
    if found is None:
        return None
    directory, keys = found
    manifest = read_manifest(directory) or {}
    segments = [manifest["segments"][k] for k in keys]
    if any(MANIFEST_KEY not in s or any("refused" not in t for t in s[MANIFEST_KEY]["tools"]) for s in segments):
        return None  # indexed before these summaries were kept: the Parquet path answers
    report = LoadReport(files=[s.name for s in sources])
    for source, segment in zip(sources, segments, strict=True):
        report.add_segment(segment, source.name)
    if len(segments) == 1:
        entries = segments[0][MANIFEST_KEY]["tools"]
        rows = [{k: e[k] for k in STATS_COLUMNS} for e in entries if tools is None or e[f.TOOL_NAME] in tools]
        return rows, report
    return _merged(directory, keys, segments, tools), report


def _merged(
    directory: Path, keys: list[str], segments: list[dict[str, Any]], tools: Sequence[str] | None
) -> list[dict[str, Any]]:
    """Rows over several segments: counts add up, percentiles are computed over every duration."""
    import numpy as np

    calls: dict[str | None, int] = {}
    errors: dict[str | None, int] = {}
    refused: dict[str | None, int] = {}
    durations: dict[str | None, list[Any]] = {}
    for key, segment in zip(keys, segments, strict=True):
        path = directory / "segments" / key / segment[MANIFEST_KEY]["file"]
        for entry in segment[MANIFEST_KEY]["tools"]:
            name = entry["tool_name"]
            if tools is not None and name not in tools:
                continue
            calls[name] = calls.get(name, 0) + entry["calls"]
            errors[name] = errors.get(name, 0) + entry["errors"]
            refused[name] = refused.get(name, 0) + entry["refused"]
            durations.setdefault(name, []).append(
                np.fromfile(path, dtype="<f8", count=entry["count"], offset=8 * entry["offset"])
            )
    rows = []
    for name in sorted(calls, key=lambda n: (n is None, n or "")):
        values = np.sort(np.concatenate(durations[name]))
        row: dict[str, Any] = {
            f.TOOL_NAME: name,
            "calls": calls[name],
            "errors": errors[name],
            "error_rate": errors[name] / calls[name] if calls[name] else None,
            "refused": refused[name],
        }
        row.update({k: _quantile(values, q) for k, q in QUANTILES.items()})
        rows.append(row)
    return rows


def _quantile(ordered: Any, q: float) -> float | None:
    """Linear interpolation between closest ranks, to `DECIMALS` places as `latency` gives it."""
    if not len(ordered):
        return None
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    lower, upper = float(ordered[low]), float(ordered[high])
    return round(lower + (upper - lower) * (position - low), DECIMALS)
