"""The replica a row came from, carried through the questions asked of a fleet dataset.

Rows loaded from a fleet dataset (see `mcptrace.logs._ship`) have a `replica`
column; rows read from local logs have none, and the answers then have no
replica columns either, so the same questions give the same answers on both.
"""

from __future__ import annotations

import polars as pl

from mcptrace._fields import REPLICA

#: Per run and per session: the replicas that served it, sorted.
REPLICAS = "replicas"
#: Per error: the replica of the example request.
EXAMPLE_REPLICA = "example_replica"


def has_replica(frame: pl.LazyFrame) -> bool:
    return REPLICA in frame.collect_schema()


def replicas_agg(frame: pl.LazyFrame) -> list[pl.Expr]:
    """The `replicas` aggregation for a group (nothing when the rows carry no replica)."""
    if not has_replica(frame):
        return []
    return [pl.col(REPLICA).drop_nulls().unique().sort().alias(REPLICAS)]


def replica_columns(frame: pl.LazyFrame, columns: list[str], name: str = REPLICAS) -> list[str]:
    return [*columns, name] if has_replica(frame) else columns
