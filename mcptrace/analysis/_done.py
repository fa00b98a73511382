"""Which line closes a request, in every version of the log.

Versions 1 and 2 end every request with a `response_sent` line (a tools/call
has a `tool_call` line before it). Version 3 writes one line per request: a
`tool_call` for a tools/call, a `response_sent` for any other method. A query
that counts requests counts the closing line, so it gives the same answer on
both shapes and never counts a v2 tools/call twice.
"""

from __future__ import annotations

import polars as pl

from mcptrace import _fields as f

#: The events that can close a request (what an event-filtered load must keep).
CLOSING_EVENTS = (f.EV_RESPONSE_SENT, f.EV_TOOL_CALL)


def request_done() -> pl.Expr:
    """True on the line that closes a request: `response_sent`, or a version-3 `tool_call`."""
    version = pl.col(f.SCHEMA_VERSION).fill_null(1)
    return (pl.col(f.EVENT) == f.EV_RESPONSE_SENT) | ((pl.col(f.EVENT) == f.EV_TOOL_CALL) & (version >= 3))
