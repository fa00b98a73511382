"""The log contract: field names, their types and the schema version.

Declared once here and used by the writer (the server) and by every reader
(the forensics layer). Types are spelled as plain strings so that the server
can import this module without importing polars; `polars_schema()` turns them
into polars dtypes for readers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mcptrace import _fields as f

if TYPE_CHECKING:
    import polars as pl

#: Bumped whenever a field is added, removed or changes type.
LOG_SCHEMA_VERSION: Final = 1

#: The fields every line must carry to be analysed.
REQUIRED_FIELDS: Final = (f.TIMESTAMP, f.EVENT, f.REQUEST_ID)

#: Field name -> type. "list[downstream]" is a list of {service, query_hash, duration_ms, status, error}.
LOG_FIELDS: Final[dict[str, str]] = {
    f.TIMESTAMP: "datetime",
    f.LEVEL: "str",
    f.EVENT: "str",
    f.SCHEMA_VERSION: "int",
    f.REQUEST_ID: "str",
    f.SESSION_ID: "str",
    f.JSONRPC_ID: "str",
    f.METHOD: "str",
    f.TOOL_NAME: "str",
    f.CALLER_ID: "str",
    f.TENANT: "str",
    f.INPUT_TOKEN_COUNT: "int",
    f.ARGUMENTS_HASH: "str",
    f.RESULT_HASH: "str",
    f.DURATION_MS: "float",
    f.STATUS: "str",
    f.ERROR: "str",
    f.ERROR_CODE: "int",
    f.SERVICE: "str",
    f.QUERY_HASH: "str",
    f.DOWNSTREAM_CALLS: "list[downstream]",
    f.TRACE_ID: "str",
    f.SPAN_ID: "str",
    f.TRANSPORT: "str",
    f.HTTP_STATUS: "int",
    f.MESSAGE: "str",
    # Written on the 2026-07-28 wire (and by handshake-era clients that send them); null otherwise.
    f.PROTOCOL_VERSION: "str",
    f.CLIENT_NAME: "str",
    f.CLIENT_VERSION: "str",
    f.PARENT_SPAN_ID: "str",
    f.BAGGAGE: "baggage",
}

#: Python types a JSON value may have for each declared type (used by validators).
JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "datetime": (str,),
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "list[downstream]": (list,),
    "baggage": (dict,),
}

#: Baggage keys readers look at (a run or conversation id); other keys are kept by the writer, not read.
BAGGAGE_KEYS: Final = ("run_id", "conversation_id", "gen_ai.conversation.id", "thread_id", "session_id")

DOWNSTREAM_FIELDS: Final[dict[str, str]] = {
    f.SERVICE: "str",
    f.QUERY_HASH: "str",
    f.DURATION_MS: "float",
    f.STATUS: "str",
    f.ERROR: "str",
}


def polars_schema() -> pl.Schema:
    """The log contract as a polars schema, for `scan_ndjson(schema=...)` and friends."""
    import polars as pl

    scalar = {
        "datetime": pl.Datetime("us", "UTC"),
        "str": pl.String(),
        "int": pl.Int64(),
        "float": pl.Float64(),
    }
    complex_types = {
        "list[downstream]": pl.List(pl.Struct({name: scalar[kind] for name, kind in DOWNSTREAM_FIELDS.items()})),
        "baggage": pl.Struct({key: pl.String() for key in BAGGAGE_KEYS}),
    }
    return pl.Schema({name: complex_types.get(kind) or scalar[kind] for name, kind in LOG_FIELDS.items()})


def validate_record(record: dict[str, object]) -> list[str]:
    """Problems with one decoded log line against the contract; empty when it conforms."""
    problems = [f"missing {name}" for name in REQUIRED_FIELDS if name not in record]
    for name, value in record.items():
        kind = LOG_FIELDS.get(name)
        if kind is None:
            problems.append(f"undeclared field {name}")
            continue
        if value is None:
            continue
        allowed = JSON_TYPES[kind]
        if isinstance(value, bool) or not isinstance(value, allowed):
            problems.append(f"{name}: expected {kind}, got {type(value).__name__}")
        elif kind == "list[downstream]":
            for item in value:  # type: ignore[attr-defined]
                if not isinstance(item, dict) or set(item) - set(DOWNSTREAM_FIELDS):
                    problems.append(f"{name}: malformed item {item!r}")
    return problems
