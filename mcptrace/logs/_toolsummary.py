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
from mcptrace.logs._aggregates import QUANTILES, counts, latency
from mcptrace.logs._loadreport import CorruptLine, LoadReport
from mcptrace.logs._manifest import fresh_segments, read_manifest
from mcptrace.logs._sources import Paths, resolve_sources

if TYPE_CHECKING:
    import polars as pl

#: Name of the durations file in a segment's directory.
DURATIONS_FILE = "tool_durations.f8"
#: Key of the summary in a segment's manifest entry.
MANIFEST_KEY = "tool_calls"
STATS_COLUMNS = [f.TOOL_NAME, "calls", "errors", "error_rate", *QUANTILES]


class SummaryWriter:
    """Sums up a segment's tool calls block by block, its durations spilled to disk tool by tool.

    Only counts are held per tool; the durations go to one scratch file per
    tool as they come, so memory does not grow with the log. `finish` then
    reads one tool's durations at a time (8 bytes per call) to compute its
    percentiles with the same expressions as `tool_stats`.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._tools: dict[str | None, list[int]] = {}  # tool -> [scratch number, calls, errors]

    def add(self, calls: pl.DataFrame) -> None:
        """Add (tool_name, failed, duration_ms) rows."""
        import polars as pl

        if not calls.height:
            return
        for (name,), group in calls.group_by(f.TOOL_NAME, maintain_order=True):
            tool = self._tools.setdefault(name, [len(self._tools), 0, 0])
            tool[1] += group.height
            tool[2] += int(group.get_column("failed").sum())
            values = group.get_column(f.DURATION_MS).drop_nulls().cast(pl.Float64).to_numpy()
            with open(self._scratch(tool[0]), "ab") as out:
                out.write(values.astype("<f8", copy=False).tobytes())

    def finish(self) -> dict[str, Any]:
        """Write the durations file (grouped by tool, tools sorted) and return the manifest entry."""
        import numpy as np
        import polars as pl

        tools = []
        offset = 0
        names = sorted(self._tools, key=lambda n: (n is None, n or ""))
        with open(self._directory / DURATIONS_FILE, "wb") as out:
            for name in names:
                number, calls, errors = self._tools[name]
                scratch = self._scratch(number)
                values = np.fromfile(scratch, dtype="<f8") if scratch.exists() else np.empty(0, "<f8")
                scratch.unlink(missing_ok=True)
                # The same aggregations as `tool_stats`, so a single file's rows are exactly what it computes.
                failed = pl.concat(
                    [pl.repeat(True, errors, eager=True), pl.repeat(False, calls - errors, eager=True)]
                )
                row = (
                    pl.DataFrame({"failed": failed})
                    .select(*counts(pl.col("failed")))
                    .hstack(pl.DataFrame({f.DURATION_MS: values}).select(*latency()))
                    .row(0, named=True)
                )
                out.write(values.tobytes())
                tools.append({f.TOOL_NAME: name, **row, "offset": offset, "count": len(values)})
                offset += len(values)
        return {"file": DURATIONS_FILE, "tools": tools}

    def _scratch(self, number: int) -> Path:
        return self._directory / f"durations-{number}.scratch"


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
    if any(MANIFEST_KEY not in s for s in segments):
        return None  # indexed before summaries were kept: the Parquet path answers
    report = LoadReport(files=[s.name for s in sources])
    for segment in segments:
        report.lines += segment["lines"]
        report.corrupt_count += segment["corrupt_count"]
        report.corrupt.extend(CorruptLine(**c) for c in segment["corrupt"])
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
    durations: dict[str | None, list[Any]] = {}
    for key, segment in zip(keys, segments, strict=True):
        path = directory / "segments" / key / segment[MANIFEST_KEY]["file"]
        for entry in segment[MANIFEST_KEY]["tools"]:
            name = entry["tool_name"]
            if tools is not None and name not in tools:
                continue
            calls[name] = calls.get(name, 0) + entry["calls"]
            errors[name] = errors.get(name, 0) + entry["errors"]
            durations.setdefault(name, []).append(
                np.fromfile(path, dtype="<f8", count=entry["count"], offset=8 * entry["offset"])
            )
    rows = []
    for name in sorted(calls, key=lambda n: (n is None, n or "")):
        values = np.concatenate(durations[name])
        row: dict[str, Any] = {
            f.TOOL_NAME: name,
            "calls": calls[name],
            "errors": errors[name],
            "error_rate": errors[name] / calls[name] if calls[name] else None,
        }
        if len(values):
            quantiles = np.quantile(values, list(QUANTILES.values()), method="linear")
            row.update({k: float(q) for k, q in zip(QUANTILES, quantiles, strict=True)})
        else:
            row.update(dict.fromkeys(QUANTILES))
        rows.append(row)
    return rows
