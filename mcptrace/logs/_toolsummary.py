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


class SummaryWriter:
    """Sums up a segment's tool calls block by block, its durations spilled to disk tool by tool.

    Only counts are held per tool; the durations go to one scratch file per
    tool as they come, so memory does not grow with the log. `finish` then
    reads one tool's durations at a time (8 bytes per call) to compute its
    percentiles with the same expressions as `tool_stats`.
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._tools: dict[str | None, list[int]] = {}  # tool -> [scratch number, calls, errors, refused]

    def add(self, rows: pl.DataFrame) -> None:
        """Add rows of `summary_input`."""
        import polars as pl

        if not rows.height:
            return
        for (name,), group in rows.group_by(f.TOOL_NAME, maintain_order=True):
            tool = self._tools.setdefault(name, [len(self._tools), 0, 0, 0])
            call = group.get_column("call").fill_null(False)
            tool[1] += int(call.sum())
            tool[2] += int((call & group.get_column("failed").fill_null(False)).sum())
            tool[3] += int(group.get_column("refused").fill_null(0).sum())
            values = group.filter(call).get_column(f.DURATION_MS).drop_nulls().cast(pl.Float64).to_numpy()
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
                number, calls, errors, refused = self._tools[name]
                scratch = self._scratch(number)
                values = np.fromfile(scratch, dtype="<f8") if scratch.exists() else np.empty(0, "<f8")
                scratch.unlink(missing_ok=True)
                # The same aggregations as `tool_stats`, over rows standing for these counts, so a single
                # file's rows are exactly what it computes: the calls, then one row for the refusals.
                n = calls + 1
                counted = pl.DataFrame(
                    {
                        "call": pl.repeat(True, calls, eager=True).extend_constant(False, 1),
                        "failed": pl.concat(
                            [pl.repeat(True, errors, eager=True), pl.repeat(False, n - errors, eager=True)]
                        ),
                        "refused": pl.repeat(0, calls, eager=True, dtype=pl.Int64).extend_constant(refused, 1),
                    }
                )
                row = (
                    counted.select(*counts(pl.col("failed"), call=pl.col("call"), refused=pl.col("refused")))
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
        row.update({k: quantile(values, q) for k, q in QUANTILES.items()})
        rows.append(row)
    return rows


def quantile(ordered: Any, q: float) -> float | None:
    """Linear interpolation between closest ranks, to `DECIMALS` places as `latency` gives it."""
    if not len(ordered):
        return None
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    lower, upper = float(ordered[low]), float(ordered[high])
    return round(lower + (upper - lower) * (position - low), DECIMALS)
