"""The reference tables of `docs/log-schema.md`, rendered from the schema itself so the two cannot drift.

    python -m mcptrace._schemadoc          # rewrite the generated part of docs/log-schema.md
    python -m mcptrace._schemadoc --check  # exit 1 when the document is stale (what the test does)
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcptrace import _fields as f
from mcptrace._schema import (
    ADDED_IN_V2,
    ADDED_IN_V3,
    DOWNSTREAM_FIELDS,
    LOG_FIELDS,
    LOG_SCHEMA_VERSION,
    MAP_ENTRY_FIELDS,
    READING_RULES,
    REQUIRED_FIELDS,
    SUPPORTED_SCHEMA_VERSIONS,
    polars_schema,
)

BEGIN = "<!-- BEGIN GENERATED: python -m mcptrace._schemadoc -->"
END = "<!-- END GENERATED -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "log-schema.md"

DESCRIPTIONS: dict[str, str] = {
    f.TIMESTAMP: "when the line was written: UTC ISO-8601 with milliseconds and `Z`",
    f.LEVEL: "`debug`, `info`, `warning` or `error`",
    f.EVENT: "what happened (see Events)",
    f.SCHEMA_VERSION: "the contract version the writer followed",
    f.REQUEST_ID: "id of one JSON-RPC request (minted, or a proxy's `X-Request-ID`); on every line it causes",
    f.SESSION_ID: "`Mcp-Session-Id` in the handshake era; null on the 2026-07-28 wire and in stateless mode",
    f.JSONRPC_ID: "the client's JSON-RPC id, as text (restarts per session: not a key)",
    f.METHOD: "JSON-RPC method, e.g. `tools/call`, `server/discover`",
    f.TOOL_NAME: "tool called (tools/call only)",
    f.CALLER_ID: "authenticated caller, else the client's declared name",
    f.TENANT: "tenant the call's data access is scoped to",
    f.INPUT_TOKEN_COUNT: "estimated tokens in the arguments (canonical JSON bytes / 4)",
    f.ARGUMENTS_HASH: "hash of the canonical (key-order-insensitive) arguments",
    f.RESULT_HASH: "hash of the canonical result (same arguments, changing results: polling, not a loop)",
    f.DURATION_MS: "milliseconds the request (or downstream call) took",
    f.STATUS: "`success`, `error`, or `refused` (a guard answered instead of the server: see `refusal_reason`)",
    f.ERROR: "error message, when status is `error`",
    f.ERROR_CODE: "JSON-RPC error code, when the request failed with one",
    f.SERVICE: "downstream service name (downstream_call lines)",
    f.QUERY_HASH: "hash of the downstream query text (the text itself is never logged)",
    f.DOWNSTREAM_CALLS: "every downstream call the tool made, in order",
    f.TRACE_ID: "the server span's trace id when tracing is on, else the client's `_meta.traceparent` one",
    f.SPAN_ID: "the server span's id, when tracing is on",
    f.PARENT_SPAN_ID: "the client's span id from `_meta.traceparent`",
    f.PROTOCOL_VERSION: "MCP protocol version of the request (`2025-11-25`, `2026-07-28`, ...)",
    f.CLIENT_NAME: "client name the client declared (`clientInfo.name`)",
    f.CLIENT_VERSION: "client version the client declared (`clientInfo.version`)",
    f.BAGGAGE: "W3C baggage the client sent in `_meta.baggage`, as `{key, value}` entries",
    f.TRANSPORT: "`http` or `stdio`",
    f.HTTP_STATUS: "HTTP status of a rejected request",
    f.MESSAGE: "free text for lifecycle lines",
    f.RETRY_AFTER_MS: "how long a refused client should wait before retrying (rate limit, session limit), or "
    "until a failed log shipment is tried again",
    f.LIMIT_SCOPE: "which limit refused a call: `caller`, `tool` (per caller and tool) or `suspended`",
    f.BREAKER_STATE: "a dependency breaker's new state: `closed`, `open` or `half_open`",
    f.PROBE_URL: "the MCP endpoint `mcptrace probe` checks",
    f.FAILED_STEP: "the gate step that failed: `initialize`, `initialized`, `list_tools`, `tool` or `streaming`",
    f.CONSECUTIVE_FAILURES: "failed probe runs in a row, up to this one",
    f.FAILING_SECONDS: "seconds since the probe's first failure in the current run of failures",
    f.FAILING_SINCE: "when the current run of probe failures began (UTC ISO-8601)",
    f.RESOURCE_URL: "where a hash-pinned remote tool or prompt definition is fetched from",
    f.RESOURCE_KIND: "what a pinned resource defines: `tool` or `prompt`",
    f.EXPECTED_SHA256: "the sha256 the configuration pins for a remote resource",
    f.ACTUAL_SHA256: "the sha256 of what was fetched or found in the cache",
    f.RESOURCE_SOURCE: "where a verified resource came from: `remote` or `cache`",
    f.REFUSAL_REASON: "why a request was refused: `unauthenticated`, `forbidden`, `rate_limited`, `suspended`, "
    "`session_cap` or `overloaded`",
    f.COUNT: "how many requests a `request_refused` line stands for (absent: one)",
    f.LAST_REQUEST_ID: "the last request a `request_refused` line stands for (`mcp_request_id` is the first)",
    f.LAST_TIMESTAMP: "when the last request a `request_refused` line stands for was refused",
    f.DROPPED_LINES: "lines the writer could not write (`log_gap`)",
    f.GAP_START: "when the first line of a gap was dropped",
    f.GAP_END: "when the last line of a gap was dropped",
    f.TARGET: "the server `mcptrace proxy` stands in front of: its command (stdio) or URL (HTTP)",
    f.EXIT_CODE: "how a proxied stdio server ended (`target_exited`): exit status, negative for a signal",
    f.RESTART_IN_MS: "milliseconds until the proxy starts the server again (`target_exited`)",
    f.CLIENT_ADDRESS: "the HTTP client's address (a trusted proxy's `X-Forwarded-For`, else the peer)",
    f.PRINCIPAL: "who a guard judged: `tok:` and a token's key, `jwt:` and the token's `iss` and `sub`, or, "
    "without auth, the declared client name `@` its address (never a token)",
    f.SESSION_OWNER: "the principal a session belongs to, when another principal named it",
}

EVENTS: dict[str, str] = {
    f.EV_REQUEST_RECEIVED: "a JSON-RPC request arrived: versions 1 and 2, the first line of every request; "
    "version 3, only a request still running after 0.2 s (its `timestamp` is when it started)",
    f.EV_TOOL_CALL: "a tools/call finished: arguments/result hashes, duration, status, downstream calls "
    "(version 3: the request's only line, and its answer left right after it)",
    f.EV_DOWNSTREAM_CALL: "one call to a dependency (database, upstream API) finished",
    f.EV_RESPONSE_SENT: "the answer left: versions 1 and 2, the last line of every request; version 3, "
    "the only line of any request other than a tools/call",
    f.EV_REQUEST_REJECTED: "an HTTP request was refused before or by the protocol layer (4xx/5xx)",
    f.EV_SERVER_STARTED: "the server accepts requests",
    f.EV_SERVER_STOPPED: "the server finished shutting down, logs flushed",
    f.EV_AUTH_FAILED: "a request failed authentication (versions 1 and 2; read as `request_refused`)",
    f.EV_RATE_LIMITED: "a call was refused by a rate limit (versions 1 and 2; read as `request_refused`)",
    f.EV_REQUEST_REFUSED: "one or more requests of one caller refused by a guard for one reason, "
    "aggregated per second (`count`, first and last request id)",
    f.EV_LOG_GAP: "the writer dropped lines (disk full, unwritable file, queue full); "
    "written as soon as a line can be written again",
    f.EV_LOG_SHIPPED: "a rotated log file reached the fleet dataset (`--ship`); `message` names the file "
    "and the destination, `duration_ms` what the shipment took",
    f.EV_LOG_SHIP_FAILED: "a shipment failed (`error`); the file stays queued and is tried again in "
    "`retry_after_ms` (absent: it could not be queued and is not retried)",
    f.EV_BREAKER_STATE: "a circuit breaker changed state (a dependency's, or `redis` for the shared guard state)",
    f.EV_REVOCATION_FEED: "a replica's copy of the revocations shared through Redis was synchronised "
    "(`status` success, `count` keys) or lost (`status` error)",
    f.EV_AUTH_WARNING: "the server started on loopback without authentication (written once, at start)",
    f.EV_PROBE_RESULT: "one `mcptrace probe` run finished: passed or the step that failed",
    f.EV_PROBE_ALERT: "the probe sent (or failed to send) an alert after repeated failures",
    f.EV_RESOURCE_LOADED: "a hash-pinned remote resource was fetched or read from cache and verified",
    f.EV_RESOURCE_REJECTED: "a pinned resource was refused: hash mismatch, HTTP error or too large",
    f.EV_TARGET_STARTED: "`mcptrace proxy` started the stdio server it stands in front of",
    f.EV_TARGET_EXITED: "the proxied stdio server ended; its calls in flight were answered with an error",
    f.EV_TARGET_OUTPUT_REJECTED: "the proxied server wrote something that is not protocol (not JSON, "
    "or over the size limit); it was not forwarded",
}


def _dtype(name: str) -> str:
    return str(polars_schema()[name])


def render() -> str:
    """The generated part of the document."""
    lines = [
        BEGIN,
        "",
        f"Current version: **{LOG_SCHEMA_VERSION}**. Readers accept versions "
        f"{', '.join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)}. "
        f"Required on every line: {', '.join(f'`{n}`' for n in REQUIRED_FIELDS)}.",
        "",
        "### Fields",
        "",
        "| field | JSON type | polars dtype | since | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, kind in LOG_FIELDS.items():
        since = 3 if name in ADDED_IN_V3 else 2 if name in ADDED_IN_V2 else 1
        lines.append(f"| `{name}` | {kind} | `{_dtype(name)}` | {since} | {DESCRIPTIONS.get(name, '—')} |")
    lines += ["", "`list[downstream]` entries:", "", "| field | JSON type |", "|---|---|"]
    lines += [f"| `{name}` | {kind} |" for name, kind in DOWNSTREAM_FIELDS.items()]
    lines += ["", "`map[str]` entries (Arrow's map layout, so polars reads any keys):", "",
              "| field | JSON type |", "|---|---|"]
    lines += [f"| `{name}` | {kind} |" for name, kind in MAP_ENTRY_FIELDS.items()]
    events = {getattr(f, n) for n in dir(f) if n.startswith("EV_")}
    lines += ["", "### Events", "", "| event | written when |", "|---|---|"]
    lines += [f"| `{event}` | {EVENTS.get(event, '—')} |" for event in sorted(events)]
    lines += ["", "### Reading rules", "", "Every command judges every line by these rules, indexed or not:", ""]
    lines += [f"- **{name}**: {rule}." for name, rule in READING_RULES.items()]
    lines += ["", END]
    return "\n".join(lines)


def updated(text: str) -> str:
    """`text` with its generated part replaced by a fresh rendering."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + render() + text[end:]


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    fresh = updated(text)
    if "--check" in argv:
        if fresh != text:
            print(f"{DOC.name} is stale: run python -m mcptrace._schemadoc", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
