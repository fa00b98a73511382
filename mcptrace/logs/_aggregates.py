"""The per-group counts and latency percentiles, declared once: the index precomputes them, `stats` runs them.

Percentiles use linear interpolation between closest ranks (numpy's and
polars' default; `statistics.quantiles(method="inclusive")`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcptrace import _fields as f

if TYPE_CHECKING:
    import polars as pl

__all__ = ["QUANTILES", "counts", "latency"]

QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}


def latency(column: str = f.DURATION_MS) -> list[pl.Expr]:
    import polars as pl  # not at the top: `stats` from an index's summary runs without polars

    return [pl.col(column).quantile(q, interpolation="linear").alias(name) for name, q in QUANTILES.items()]


def counts(failed: pl.Expr) -> list[pl.Expr]:
    import polars as pl

    return [
        pl.len().cast(pl.Int64).alias("calls"),
        failed.sum().cast(pl.Int64).alias("errors"),
        failed.mean().alias("error_rate"),
    ]
