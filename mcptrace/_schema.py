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
#: 1: the foundation contract. 2: adds protocol_version, client_name, client_version,
#: parent_span_id and baggage (the client's era, identity and W3C trace context).
#: 3: refusals are one event (`request_refused`, status `refused`, a reason, possibly aggregated with a
#: count) and the log records its own gaps (`log_gap`); a refusal names who was judged (`principal`,
#: `client_address`) and, for a session of someone else, its owner (`session_owner`); a request is one
#: line when it ends (`tool_call` for a tools/call, `response_sent` otherwise, each carrying the whole
#: request), and `request_received` is written only for a request still running after a moment;
#: `mcptrace proxy` adds `target`, `exit_code` and `restart_in_ms` (`target_started`, `target_exited`,
#: `target_output_rejected`).
LOG_SCHEMA_VERSION: Final = 3

#: Every schema version readers accept; files of any of them read with `polars_schema()`.
SUPPORTED_SCHEMA_VERSIONS: Final = (1, 2, 3)

#: The fields every line must carry to be analysed.
REQUIRED_FIELDS: Final = (f.TIMESTAMP, f.EVENT, f.REQUEST_ID)

#: Field name -> type. "list[downstream]" is a list of {service, query_hash, duration_ms, status, error};
#: "map[str]" is a string-to-string map written as a list of {key, value} pairs (Arrow's map layout).
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
    f.PARENT_SPAN_ID: "str",
    f.PROTOCOL_VERSION: "str",
    f.CLIENT_NAME: "str",
    f.CLIENT_VERSION: "str",
    f.BAGGAGE: "map[str]",
    f.TRANSPORT: "str",
    f.HTTP_STATUS: "int",
    f.MESSAGE: "str",
    f.RETRY_AFTER_MS: "int",
    f.LIMIT_SCOPE: "str",
    f.BREAKER_STATE: "str",
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
    f.REFUSAL_REASON: "str",
    f.COUNT: "int",
    f.LAST_REQUEST_ID: "str",
    f.LAST_TIMESTAMP: "datetime",
    f.DROPPED_LINES: "int",
    f.GAP_START: "datetime",
    f.GAP_END: "datetime",
    f.TARGET: "str",
    f.EXIT_CODE: "int",
    f.RESTART_IN_MS: "int",
    f.CLIENT_ADDRESS: "str",
    f.PRINCIPAL: "str",
    f.SESSION_OWNER: "str",
}

#: Python types a JSON value may have for each declared type (used by validators).
JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "datetime": (str,),
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "list[downstream]": (list,),
    "map[str]": (list,),
}

#: How every reader judges a line (`mcptrace.logs` applies them, in bulk and line by line, the same way in
#: every command, indexed or not). A line is accepted, possibly with a value coerced or read as null, or
#: rejected: counted and reported with file:line and the reason, never a crash, never silently dropped.
READING_RULES: Final[dict[str, str]] = {
    "record": "a line that is not one JSON object (bad JSON, not UTF-8, torn by a crash, a list) is rejected",
    "envelope": "a line without a readable `timestamp` or without an `event` (or whose event is an object "
    "or a list) is rejected",
    "time zone": "a timestamp with an offset is converted to UTC; a timestamp without one is UTC",
    "numbers as text": 'a number written as text (`"12.5"`) is read as that number; an integer field takes '
    "a whole number written with a fraction (`3.0`)",
    "text from scalars": "a number or a boolean where text belongs is read as text (`true`, `7`, `1.5`; "
    "a whole float without its `.0`)",
    "wrong type": "any other value of the wrong type (an object where text belongs, text that is no number) "
    "is read as null and noted with file:line; the rest of the line is kept",
    "nested": "the entries of `downstream_calls` and `baggage` follow the same rules, field by field",
    "unknown fields": "fields the schema does not declare are ignored by the analysis (`chain` shows them)",
    "repeats": "an exact repeat of an earlier line of the same file is counted once and reported",
    "newer schema": "lines of a newer `schema_version` are read by these rules, counted, and warned about "
    "once per command (N lines of schema vN: upgrade mcptrace)",
    "refusals": "`request_refused` lines (and versions 1-2's `auth_failed` and `rate_limited`) are refused "
    "requests, `count` of them each (absent: one): neither calls nor errors",
}

#: Fields that schema version 2 added; a version-1 line never carries them.
ADDED_IN_V2: Final = frozenset(
    {
        f.PARENT_SPAN_ID, f.PROTOCOL_VERSION, f.CLIENT_NAME, f.CLIENT_VERSION, f.BAGGAGE,
        f.RETRY_AFTER_MS, f.LIMIT_SCOPE, f.BREAKER_STATE, f.PROBE_URL, f.FAILED_STEP, f.CONSECUTIVE_FAILURES,
        f.FAILING_SECONDS, f.FAILING_SINCE, f.RESOURCE_URL, f.RESOURCE_KIND, f.EXPECTED_SHA256,
        f.ACTUAL_SHA256, f.RESOURCE_SOURCE,
    }
)

#: Fields that schema version 3 added.
ADDED_IN_V3: Final = frozenset(
    {
        f.REFUSAL_REASON, f.COUNT, f.LAST_REQUEST_ID, f.LAST_TIMESTAMP, f.DROPPED_LINES, f.GAP_START, f.GAP_END,
        f.TARGET, f.EXIT_CODE, f.RESTART_IN_MS, f.CLIENT_ADDRESS, f.PRINCIPAL, f.SESSION_OWNER,
    }
)

#: The fields each schema version declares.
FIELDS_BY_VERSION: Final[dict[int, frozenset[str]]] = {
    1: frozenset(LOG_FIELDS) - ADDED_IN_V2 - ADDED_IN_V3,
    2: frozenset(LOG_FIELDS) - ADDED_IN_V3,
    3: frozenset(LOG_FIELDS),
}

MAP_ENTRY_FIELDS: Final[dict[str, str]] = {"key": "str", "value": "str"}

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
    def list_of(fields: dict[str, str]) -> pl.List:
        return pl.List(pl.Struct({name: scalar[kind] for name, kind in fields.items()}))

    nested = {"list[downstream]": list_of(DOWNSTREAM_FIELDS), "map[str]": list_of(MAP_ENTRY_FIELDS)}
    return pl.Schema({name: nested.get(kind) or scalar[kind] for name, kind in LOG_FIELDS.items()})


def validate_record(record: dict[str, object]) -> list[str]:
    """Problems with one decoded log line against the contract of its own version; empty when it conforms.

    A line without `schema_version`, or with version 1, is checked against version 1:
    files written before version 2 stay valid.
    """
    problems = [f"missing {name}" for name in REQUIRED_FIELDS if name not in record]
    version = record.get(f.SCHEMA_VERSION, 1)
    valid_version = isinstance(version, int) and not isinstance(version, bool)
    declared = FIELDS_BY_VERSION.get(version) if valid_version else None  # type: ignore[call-overload]
    if declared is None:
        problems.append(f"unsupported schema_version {version!r}")
        declared = FIELDS_BY_VERSION[LOG_SCHEMA_VERSION]
    for name, value in record.items():
        kind = LOG_FIELDS.get(name)
        if kind is None or name not in declared:
            problems.append(f"undeclared field {name}" + (f" in schema {version}" if kind else ""))
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
        elif kind == "map[str]":
            for item in value:  # type: ignore[attr-defined]
                if not (isinstance(item, dict) and set(item) == set(MAP_ENTRY_FIELDS)
                        and all(isinstance(v, str) for v in item.values())):
                    problems.append(f"{name}: malformed entry {item!r}")
    return problems
