"""The order of rows every query relies on, so that the answer never depends on how the logs were read.

A plain file is read in line order, an index in request-id order, and several
files or blocks may be read in parallel: whenever a query keeps the first or
last of something, lists request ids or tools, or breaks a tie, it orders rows
by time, then request id, then event (nulls first), and rows equal in all
three keep the order they were written in (oldest file first), which the index
keeps too. The same logs therefore give the same answer, example ids and list
order included, indexed or not.
"""

from __future__ import annotations

import polars as pl

from mcptrace import _fields as f

__all__ = ["ORDER", "in_order"]

#: Time, then request id, then event.
ORDER = (f.TIMESTAMP, f.REQUEST_ID, f.EVENT)


def in_order(frame: pl.LazyFrame, *first: str) -> pl.LazyFrame:
    """`frame` sorted by `first` (if any), then `ORDER`; rows equal in all of them keep their order."""
    keys = [*first, *ORDER]
    return frame.sort(keys, nulls_last=False, maintain_order=True)
