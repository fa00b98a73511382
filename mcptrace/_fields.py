"""Every name that crosses a boundary, declared once.

Log keys, event names, span attributes and metric names are joined on by the
analysis layer, so the writer, the middleware and the readers all import them
from here. This module imports nothing heavy: the CLI's analysis commands and
the server's hot path both load it.
"""

from __future__ import annotations

from typing import Final

# -- log record keys ---------------------------------------------------------
TIMESTAMP: Final = "timestamp"
LEVEL: Final = "level"
EVENT: Final = "event"
SCHEMA_VERSION: Final = "schema_version"
#: The replica a row of a fleet dataset was shipped from (a column there, never a log key).
REPLICA: Final = "replica"
REQUEST_ID: Final = "mcp_request_id"
SESSION_ID: Final = "session_id"
JSONRPC_ID: Final = "jsonrpc_id"
METHOD: Final = "method"
TOOL_NAME: Final = "tool_name"
CALLER_ID: Final = "caller_id"
TENANT: Final = "tenant"
INPUT_TOKEN_COUNT: Final = "input_token_count"
ARGUMENTS_HASH: Final = "arguments_hash"
RESULT_HASH: Final = "result_hash"
DURATION_MS: Final = "duration_ms"
STATUS: Final = "status"
ERROR: Final = "error"
ERROR_CODE: Final = "error_code"
DOWNSTREAM_CALLS: Final = "downstream_calls"
SERVICE: Final = "service"
QUERY_HASH: Final = "query_hash"
TRACE_ID: Final = "trace_id"
SPAN_ID: Final = "span_id"
PARENT_SPAN_ID: Final = "parent_span_id"
PROTOCOL_VERSION: Final = "protocol_version"
CLIENT_NAME: Final = "client_name"
CLIENT_VERSION: Final = "client_version"
BAGGAGE: Final = "baggage"
TRANSPORT: Final = "transport"
HTTP_STATUS: Final = "http_status"
MESSAGE: Final = "message"
RETRY_AFTER_MS: Final = "retry_after_ms"
LIMIT_SCOPE: Final = "limit_scope"
BREAKER_STATE: Final = "breaker_state"
REFUSAL_REASON: Final = "refusal_reason"
COUNT: Final = "count"
LAST_REQUEST_ID: Final = "last_request_id"
LAST_TIMESTAMP: Final = "last_timestamp"
DROPPED_LINES: Final = "dropped_lines"
GAP_START: Final = "gap_start"
GAP_END: Final = "gap_end"
#: The server `mcptrace proxy` stands in front of (its command or URL), on the proxy's own lines.
TARGET: Final = "target"
#: How a proxied stdio server ended: its exit status (negative: the signal that killed it).
EXIT_CODE: Final = "exit_code"
#: Milliseconds until the proxy starts a stdio server that ended again.
RESTART_IN_MS: Final = "restart_in_ms"
CLIENT_ADDRESS: Final = "client_address"
PRINCIPAL: Final = "principal"
SESSION_OWNER: Final = "session_owner"

# -- status values -----------------------------------------------------------
SUCCESS: Final = "success"
FAILURE: Final = "error"
REFUSED: Final = "refused"

# -- refusal reasons (`refusal_reason` of a refused request) -------------------
R_UNAUTHENTICATED: Final = "unauthenticated"
R_FORBIDDEN: Final = "forbidden"
R_RATE_LIMITED: Final = "rate_limited"
R_SUSPENDED: Final = "suspended"
R_SESSION_CAP: Final = "session_cap"
R_OVERLOADED: Final = "overloaded"

# -- event names -------------------------------------------------------------
EV_REQUEST_RECEIVED: Final = "request_received"
EV_TOOL_CALL: Final = "tool_call"
EV_DOWNSTREAM_CALL: Final = "downstream_call"
EV_RESPONSE_SENT: Final = "response_sent"
EV_REQUEST_REJECTED: Final = "request_rejected"
EV_SERVER_STARTED: Final = "server_started"
EV_SERVER_STOPPED: Final = "server_stopped"
EV_AUTH_FAILED: Final = "auth_failed"
EV_RATE_LIMITED: Final = "rate_limited"
EV_BREAKER_STATE: Final = "breaker_state_changed"
EV_AUTH_WARNING: Final = "auth_disabled"
EV_REQUEST_REFUSED: Final = "request_refused"
EV_LOG_GAP: Final = "log_gap"
EV_TARGET_STARTED: Final = "target_started"
EV_TARGET_EXITED: Final = "target_exited"
EV_TARGET_OUTPUT_REJECTED: Final = "target_output_rejected"
EV_REVOCATION_FEED: Final = "revocation_feed"
EV_LOG_SHIPPED: Final = "log_shipped"
EV_LOG_SHIP_FAILED: Final = "log_ship_failed"

# -- request metadata exchanged with clients ---------------------------------
REQUEST_ID_HEADER: Final = "x-request-id"
META_REQUEST_ID: Final = "mcptrace/mcp_request_id"
#: Headers `mcptrace proxy` adds to every request it passes to an HTTP target: who is calling, for whom.
CALLER_HEADER: Final = "x-mcptrace-caller"
TENANT_HEADER: Final = "x-mcptrace-tenant"

# -- span attributes (OpenTelemetry; MCP semantic conventions where they exist)
ATTR_REQUEST_ID: Final = "mcptrace.mcp_request_id"
ATTR_METHOD: Final = "mcp.method.name"
ATTR_SESSION_ID: Final = "mcp.session.id"
ATTR_PROTOCOL_VERSION: Final = "mcp.protocol.version"
ATTR_TOOL_NAME: Final = "gen_ai.tool.name"
ATTR_JSONRPC_ID: Final = "jsonrpc.request.id"
ATTR_CALLER_ID: Final = "mcptrace.caller_id"
ATTR_TENANT: Final = "mcptrace.tenant"
ATTR_ERROR_TYPE: Final = "error.type"

# -- metric names ------------------------------------------------------------
M_TOOL_CALLS: Final = "mcp_tool_calls_total"
M_TOOL_DURATION: Final = "mcp_tool_duration_seconds"
M_ACTIVE_SESSIONS: Final = "mcp_active_sessions"
M_DOWNSTREAM_ERRORS: Final = "mcp_downstream_errors_total"
M_AUTH_FAILURES: Final = "mcptrace_auth_failures_total"
M_RATE_LIMITED: Final = "mcptrace_rate_limit_rejections_total"
M_SESSION_LIMITED: Final = "mcptrace_session_limit_rejections_total"
M_SUSPENSIONS: Final = "mcptrace_suspensions_total"
M_BREAKER_TRANSITIONS: Final = "mcptrace_breaker_transitions_total"

# -- OpenTelemetry: more span attributes, metric labels and metric names ------
ATTR_GEN_AI_OPERATION: Final = "gen_ai.operation.name"
ATTR_NETWORK_TRANSPORT: Final = "network.transport"
ATTR_PEER_SERVICE: Final = "peer.service"
ATTR_QUERY_HASH: Final = "mcptrace.query_hash"
ATTR_DOWNSTREAM_ERROR: Final = "mcptrace.downstream.error"
ATTR_RPC_STATUS_CODE: Final = "rpc.response.status_code"
ATTR_GEN_AI_PROMPT_NAME: Final = "gen_ai.prompt.name"
#: The `exception` span event and its attributes (OpenTelemetry's semantic conventions).
EVENT_EXCEPTION: Final = "exception"
ATTR_EXCEPTION_TYPE: Final = "exception.type"
ATTR_EXCEPTION_MESSAGE: Final = "exception.message"
ATTR_EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
ATTR_EXCEPTION_ESCAPED: Final = "exception.escaped"
L_TOOL: Final = "tool"
L_STATUS: Final = "status"
L_SERVICE: Final = "service"
L_SIGNAL: Final = "signal"
L_REASON: Final = "reason"
#: OpenTelemetry semantic-convention MCP metrics (histograms, seconds).
M_OPERATION_DURATION: Final = "mcp.server.operation.duration"
M_SESSION_DURATION: Final = "mcp.server.session.duration"
#: Guard metrics, fed through `mcptrace.telemetry._metrics.register_guard_metrics`.
M_BREAKER_STATE: Final = "mcptrace_breaker_state"
#: Telemetry the exporters could not deliver (queue full or export failed), by signal.
M_TELEMETRY_DROPPED: Final = "mcptrace_telemetry_dropped_total"
#: JSON log lines the writer could not write (disk full, file size limit), torn ones included.
#: The session cap (`MCPTRACE_MAX_SESSIONS`), beside `mcp_active_sessions`; absent when stateless.
M_MAX_SESSIONS: Final = "mcptrace_max_sessions"
#: Requests a guard answered instead of the server, by `reason` (the log's `refusal_reason` values).
M_REQUESTS_REFUSED: Final = "mcptrace_requests_refused_total"
#: tools/call requests by `caller` and `status`: per-client call and error rates.
M_CALLER_TOOL_CALLS: Final = "mcptrace_caller_tool_calls_total"
#: tools/call requests that repeated one caller's call (same tool, arguments and answer) often enough
#: within a short window to look like an agent loop, by `tool` (see `telemetry._repeats`).
M_LOOP_SUSPECTED_CALLS: Final = "mcptrace_loop_suspected_calls_total"
L_CALLER: Final = "caller"
L_STATE: Final = "state"
#: The label value a metric gives a name it does not keep apart (a tool that does not exist, a method
#: the protocol does not define, a caller past the limit, a protocol version nobody published): labels
#: stay bounded.
UNKNOWN_LABEL: Final = "_unknown"

# -- release safety: probes and pinned resources -----------------------------
PROBE_URL: Final = "probe_url"
FAILED_STEP: Final = "failed_step"
CONSECUTIVE_FAILURES: Final = "consecutive_failures"
FAILING_SECONDS: Final = "failing_seconds"
FAILING_SINCE: Final = "failing_since"
RESOURCE_URL: Final = "resource_url"
RESOURCE_KIND: Final = "resource_kind"
EXPECTED_SHA256: Final = "expected_sha256"
ACTUAL_SHA256: Final = "actual_sha256"
RESOURCE_SOURCE: Final = "resource_source"
EV_PROBE_RESULT: Final = "probe_result"
EV_PROBE_ALERT: Final = "probe_alert"
EV_RESOURCE_LOADED: Final = "resource_loaded"
EV_RESOURCE_REJECTED: Final = "resource_rejected"
M_PROBE_RUNS: Final = "mcptrace_probe_runs_total"
M_PROBE_DURATION: Final = "mcptrace_probe_duration_seconds"
M_PROBE_FAILING_SECONDS: Final = "mcptrace_probe_failing_seconds"
M_PROBE_CONSECUTIVE_FAILURES: Final = "mcptrace_probe_consecutive_failures"
M_RESOURCES_REJECTED: Final = "mcptrace_resources_rejected_total"

# -- the proxy ----------------------------------------------------------------
#: 1 while the proxied server answers (stdio: running; HTTP: reachable), 0 while it does not, by
#: `target` (its URL or command as configured); the alert rules read it.
M_PROXY_TARGET_UP: Final = "mcptrace_proxy_target_up"
#: Messages relayed, by direction (`to_target`, `to_client`) and kind (`request`, `notification`,
#: `response`, `batch`, `unknown`: what the proxy relays without understanding it).
M_PROXY_MESSAGES: Final = "mcptrace_proxy_messages_total"
M_PROXY_TARGET_RESTARTS: Final = "mcptrace_proxy_target_restarts_total"
#: Lines a stdio server wrote to stdout that are not protocol (not JSON, or over the size limit).
M_PROXY_OUTPUT_REJECTED: Final = "mcptrace_proxy_target_output_rejected_total"
L_TARGET: Final = "target"
L_DIRECTION: Final = "direction"
L_KIND: Final = "kind"
