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
    f.PROBE_URL: "str",
    f.FAILED_STEP: "str",
    f.CONSECUTIVE_FAILURES: "int",
    f.FAILING_SECONDS: "float",
    f.FAILING_SINCE: "str",
    f.RESOURCE_URL: "str",
    f.RESOURCE_KIND: "str",
    f.EXPECTED_SHA256: "str",
    f.ACTUAL_SHA256: "str",
    f.RESOURCE_SOURCE: "str",
}

#: Python types a JSON value may have for each declared type (used by validators).
JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "datetime": (str,),
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "list[downstream]": (list,),
}

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
    downstream = pl.Struct({name: scalar[kind] for name, kind in DOWNSTREAM_FIELDS.items()})
    return pl.Schema(
        {
            name: (pl.List(downstream) if kind == "list[downstream]" else scalar[kind])
            for name, kind in LOG_FIELDS.items()
        }
    )


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
