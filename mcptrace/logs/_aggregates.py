"""The per-group counts and latency percentiles, declared once: the index precomputes them, `stats` runs them.

Percentiles use linear interpolation between closest ranks (numpy's and
polars' default; `statistics.quantiles(method="inclusive")`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcptrace import _fields as f

if TYPE_CHECKING:
    import polars as pl

__all__ = ["DECIMALS", "QUANTILES", "counts", "latency"]

QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}
#: Percentiles are given to the nanosecond: beyond that, the last digit of an interpolation depends on
#: the order of the arithmetic (polars itself differs between kernels), and answers must not.
DECIMALS = 6


def latency(column: str = f.DURATION_MS, *, call: pl.Expr | None = None) -> list[pl.Expr]:
    """p50/p95/p99 of `column` over the rows marked by `call` (all rows without it)."""
    import polars as pl  # not at the top: `stats` from an index's summary runs without polars

    values = pl.col(column) if call is None else pl.col(column).filter(call.fill_null(False))
    return [
        values.quantile(q, interpolation="linear").round(DECIMALS).alias(name) for name, q in QUANTILES.items()
    ]


def counts(failed: pl.Expr, *, call: pl.Expr | None = None, refused: pl.Expr | None = None) -> list[pl.Expr]:
    """calls, errors, error_rate (errors / calls, null without calls), and refused when `refused` is given.

    `call` marks the rows that are calls (all rows without it); `refused` is the
    number of refused requests a row stands for (they are not calls).
    """
    import polars as pl

    is_call = pl.lit(True) if call is None else call.fill_null(False)
    n_calls = is_call.sum().cast(pl.Int64)
    n_errors = (is_call & failed.fill_null(False)).sum().cast(pl.Int64)
    out = [
        n_calls.alias("calls"),
        n_errors.alias("errors"),
        pl.when(n_calls > 0).then(n_errors / n_calls).alias("error_rate"),
    ]
    if refused is not None:
        out.append(refused.sum().cast(pl.Int64).alias("refused"))
    return out
