"""Which lines are refused requests, and how many each stands for, in every version of the log.

A refused request (unauthenticated, forbidden, rate-limited, suspended, over
the session cap, overloaded) never ran: it is neither a call nor a failure,
and it is counted as `refused`, next to them, whoever the caller was. Version 3
writes it as a `request_refused` line (status `refused`, a `refusal_reason`),
and one line may stand for the `count` refusals of one caller within a second.
Versions 1 and 2 wrote `auth_failed` and `rate_limited` lines: read here as the
same thing, with the reason their fields imply. Declared in the reading
layer because the index precomputes the per-tool counts with it.
"""

from __future__ import annotations

import polars as pl

from mcptrace import _fields as f

__all__ = ["REFUSAL_COLUMNS", "REFUSAL_EVENTS", "is_refusal", "refusal_reason", "refusals"]

#: The events that are refused requests (what an event-filtered load must keep for `refused`).
REFUSAL_EVENTS = (f.EV_REQUEST_REFUSED, f.EV_RATE_LIMITED, f.EV_AUTH_FAILED)
#: The fields the refusal expressions read.
REFUSAL_COLUMNS = [f.COUNT, f.REFUSAL_REASON, f.LIMIT_SCOPE, f.HTTP_STATUS]


def is_refusal() -> pl.Expr:
    """True on a line that stands for one or more refused requests."""
    return pl.col(f.EVENT).is_in(list(REFUSAL_EVENTS))


def refusals() -> pl.Expr:
    """How many refused requests the line stands for: `count` (absent: one), zero on any other line."""
    return pl.when(is_refusal()).then(pl.col(f.COUNT).fill_null(1).clip(lower_bound=1)).otherwise(0)


def refusal_reason() -> pl.Expr:
    """The reason of a refusal line; a version-1/2 line's reason is read from its event and fields."""
    legacy = (
        pl.when(pl.col(f.EVENT) == f.EV_RATE_LIMITED)
        .then(
            pl.when(pl.col(f.LIMIT_SCOPE) == f.R_SUSPENDED)
            .then(pl.lit(f.R_SUSPENDED))
            .otherwise(pl.lit(f.R_RATE_LIMITED))
        )
        .when(pl.col(f.EVENT) == f.EV_AUTH_FAILED)
        .then(
            pl.when(pl.col(f.HTTP_STATUS) == 403)
            .then(pl.lit(f.R_FORBIDDEN))
            .otherwise(pl.lit(f.R_UNAUTHENTICATED))
        )
    )
    return pl.when(is_refusal()).then(pl.coalesce(pl.col(f.REFUSAL_REASON), legacy, pl.lit("unknown")))
