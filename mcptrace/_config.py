"""Server configuration: one frozen dataclass, from keyword arguments or `MCPTRACE_*` variables.

Arguments win over the environment, the environment over the defaults. Every
variable is listed in `ENVIRONMENT` with what it sets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mcptrace._errors import ConfigError


def default_data_dir() -> Path:
    """Where `mcptrace serve` keeps its database and logs unless told otherwise."""
    env = os.environ.get("MCPTRACE_DATA_DIR")
    return Path(env) if env else Path.cwd() / ".mcptrace"


@dataclass(frozen=True, kw_only=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    allow_non_loopback: bool = False
    stateless: bool = False
    data_dir: Path = field(default_factory=default_data_dir)
    log_file: Path | None = None
    log_stderr: bool = False
    log_level: str = "info"
    log_max_bytes: int = 100 * 1024 * 1024
    log_backups: int = 10
    max_body_bytes: int = 1024 * 1024
    db_path: Path | None = None
    upstream_url: str | None = None
    upstream_timeout: float = 2.0
    report_steps: int = 5
    report_step_seconds: float = 0.25
    tokens_file: Path | None = None
    token_reload_interval: float = 0.0
    jwks: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_caller_claim: str = "sub"
    jwt_tenant_claim: str = "tenant"
    redis_url: str | None = None
    redis_timeout: float = 0.05
    replica_id: str | None = None
    rate_limit_caller: str = "50/100"
    rate_limit_tools: str = "ping=200/400,get_config=200/400,run_report=0.1/5,*=10/20"
    suspend_after: int = 20
    suspend_window: float = 10.0
    suspend_seconds: float = 60.0
    breaker_failure_rate: float = 0.5
    breaker_min_calls: int = 5
    breaker_window: float = 30.0
    breaker_cooldown: float = 5.0
    health_cache_seconds: float = 1.0
    session_idle_seconds: float = 1800.0
    max_sessions: int = 10_000
    max_sessions_per_caller: int = 0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024
    body_budget_bytes: int = 64 * 1024 * 1024
    body_budget_per_caller: int = 0
    loop_threshold: int = 20
    loop_window: float = 10.0
    #: `mcptrace proxy`: seconds the target has to answer a request before the client gets an error.
    request_timeout: float = 300.0
    #: `mcptrace proxy`: largest message accepted from the target (larger is logged and not forwarded).
    target_max_message_bytes: int = 16 * 1024 * 1024
    #: `mcptrace proxy`: first wait before restarting a stdio server that ended; doubles up to the maximum.
    restart_backoff: float = 0.25
    restart_backoff_max: float = 30.0
    #: Where each rotated log file is shipped (a folder or `s3://bucket/prefix`); None ships nothing.
    ship: str | None = None
    #: First wait after a failed shipment; doubles on each failure in a row up to `ship_retry_max`.
    ship_retry: float = 5.0
    ship_retry_max: float = 300.0

    @property
    def auth_enabled(self) -> bool:
        return self.tokens_file is not None or self.jwks is not None

    @property
    def sessions_per_caller(self) -> int:
        """Sessions one principal may hold open: the setting, else a quarter of the server's cap."""
        return self.max_sessions_per_caller or max(1, self.max_sessions // 4)

    @property
    def body_budget_for_caller(self) -> int:
        """Request-body bytes one principal may have in flight: the setting, else a quarter of the budget."""
        return self.body_budget_per_caller or max(self.max_body_bytes, self.body_budget_bytes // 4)
    metrics: bool = True
    #: `MCPTRACE_SPAN_EXPORT` when set; None leaves the choice to `telemetry._otlp.span_export_mode`.
    span_export: str | None = None
    resources_manifest: Path | None = None

    @property
    def resources_cache_dir(self) -> Path:
        return self.data_dir / "resources"

    @property
    def resolved_db_path(self) -> Path:
        return self.db_path or self.data_dir / "mcptrace.sqlite3"

    @property
    def resolved_log_file(self) -> Path:
        return self.log_file or self.data_dir / "logs" / "mcptrace.log"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build from `MCPTRACE_*` variables, then apply non-None keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for var, name in ENV_FIELDS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _coerce(var, raw, str(types[name]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None


def _coerce(var: str, raw: str, type_name: str) -> Any:
    try:
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if "Path" in type_name:
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {type_name}") from None


ENVIRONMENT: Final[dict[str, str]] = {
    "MCPTRACE_HOST": "address to bind (default 127.0.0.1; others need MCPTRACE_ALLOW_NON_LOOPBACK)",
    "MCPTRACE_PORT": "port to bind (default 8765)",
    "MCPTRACE_ALLOW_NON_LOOPBACK": "1 to allow binding a non-loopback address (logged loudly at every start)",
    "MCPTRACE_STATELESS": "1 for stateless Streamable HTTP (no Mcp-Session-Id)",
    "MCPTRACE_DATA_DIR": "directory for the database and default log file (default ./.mcptrace)",
    "MCPTRACE_LOG_FILE": "JSON log file (default DATA_DIR/logs/mcptrace.log)",
    "MCPTRACE_LOG_STDERR": "1 to also write the JSON lines to stderr",
    "MCPTRACE_LOG_LEVEL": "debug | info | warning | error (default info)",
    "MCPTRACE_LOG_MAX_BYTES": "rotate the log file at this size (default 100 MiB)",
    "MCPTRACE_LOG_BACKUPS": "rotated files to keep (default 10)",
    "MCPTRACE_MAX_BODY_BYTES": "largest request body accepted (default 1 MiB; larger gets 413)",
    "MCPTRACE_DB_PATH": "SQLite database of search_database (default DATA_DIR/mcptrace.sqlite3)",
    "MCPTRACE_UPSTREAM_URL": "base URL of the HTTP API behind fetch_upstream",
    "MCPTRACE_UPSTREAM_TIMEOUT": "seconds before an upstream call times out (default 2)",
    "MCPTRACE_TOKENS_FILE": "token store (`mcptrace token add`); turns bearer-token auth on",
    "MCPTRACE_TOKEN_RELOAD_INTERVAL": "seconds between checks of the token store for changes (default 0: every "
                                      "request, so a revocation holds from the next request on)",
    "MCPTRACE_JWKS": "JWKS file or https URL of the OAuth issuer's keys; turns JWT auth on",
    "MCPTRACE_JWT_ISSUER": "required `iss` of JWT access tokens",
    "MCPTRACE_JWT_AUDIENCE": "required `aud` of JWT access tokens",
    "MCPTRACE_JWT_CALLER_CLAIM": "JWT claim holding the caller id (default sub)",
    "MCPTRACE_JWT_TENANT_CLAIM": "JWT claim holding the tenant (default tenant)",
    "MCPTRACE_REDIS_URL": "redis:// URL: share rate limits, suspensions and revocations across replicas",
    "MCPTRACE_REDIS_TIMEOUT": "seconds any one Redis call may take before the guard goes on without it "
                              "(default 0.05)",
    "MCPTRACE_REPLICA_ID": "this replica's name behind a proxy: session ids start with it (`ID.`), so the "
                           "proxy can route a session to its replica (deploy/*replicas*); also the `replica=` "
                           "partition its shipped logs go to (default the host name)",
    "MCPTRACE_RATE_LIMIT_CALLER": "per-caller token bucket as RATE/BURST, calls per second (default 50/100)",
    "MCPTRACE_RATE_LIMIT_TOOLS": "per (caller, tool) buckets, TOOL=RATE/BURST,...; `*` is the default",
    "MCPTRACE_SUSPEND_AFTER": "rate-limit violations within SUSPEND_WINDOW that suspend a caller (default 20)",
    "MCPTRACE_SUSPEND_WINDOW": "seconds over which violations are counted (default 10)",
    "MCPTRACE_SUSPEND_SECONDS": "how long a suspension lasts (default 60)",
    "MCPTRACE_BREAKER_FAILURE_RATE": "error share of recent downstream calls that opens a breaker (default 0.5)",
    "MCPTRACE_BREAKER_MIN_CALLS": "calls in the window before a breaker may open (default 5)",
    "MCPTRACE_BREAKER_WINDOW": "seconds of downstream outcomes a breaker looks at (default 30)",
    "MCPTRACE_BREAKER_COOLDOWN": "seconds an open breaker waits before a half-open trial call (default 5)",
    "MCPTRACE_SESSION_IDLE_SECONDS": "close a session after this long with no request in flight (default 1800)",
    "MCPTRACE_MAX_SESSIONS": "open handshake-era sessions at most; one more gets 503 with Retry-After (default 10000)",
    "MCPTRACE_MAX_SESSIONS_PER_CALLER": "open sessions one principal may hold; one more gets 429 with Retry-After "
                                        "(default a quarter of MCPTRACE_MAX_SESSIONS)",
    "MCPTRACE_HEADER_TIMEOUT": "seconds a client has to send a complete request head; then 408 and close (default 10)",
    "MCPTRACE_BODY_TIMEOUT": "seconds a client has to send the whole request body; then 408 and close (default 30)",
    "MCPTRACE_MAX_HEADER_BYTES": "largest request head (request line and headers) accepted; larger gets 431 "
                                 "(default 16384)",
    "MCPTRACE_BODY_BUDGET_BYTES": "request-body bytes the server accepts in flight at once; past it, 503 with "
                                  "Retry-After (default 64 MiB)",
    "MCPTRACE_BODY_BUDGET_PER_CALLER": "request-body bytes one principal may have in flight (default a quarter "
                                       "of MCPTRACE_BODY_BUDGET_BYTES)",
    "MCPTRACE_REQUEST_TIMEOUT": "proxy: seconds the target has to answer a request (default 300)",
    "MCPTRACE_TARGET_MAX_MESSAGE_BYTES": "proxy: largest message accepted from the target (default 16 MiB)",
    "MCPTRACE_RESTART_BACKOFF": "proxy: seconds before restarting a stdio server that ended (default 0.25; "
                                "doubles on each restart in a row)",
    "MCPTRACE_RESTART_BACKOFF_MAX": "proxy: longest wait between restarts (default 30)",
    "MCPTRACE_SHIP": "ship each rotated log file to this folder or s3://bucket/prefix (AWS_* variables, "
                     "AWS_ENDPOINT_URL included, for S3), off the request path; see docs/fleet.md",
    "MCPTRACE_SHIP_RETRY": "seconds before a failed shipment is tried again (default 5; doubles on each "
                           "failure in a row)",
    "MCPTRACE_SHIP_RETRY_MAX": "longest wait between tries of a failed shipment (default 300)",
    "MCPTRACE_HEALTH_CACHE_SECONDS": "how long a /health answer is reused (default 1)",
    "MCPTRACE_LOOP_THRESHOLD": "identical calls of one caller (same tool, arguments and answer) within "
                               "LOOP_WINDOW that count as a suspected loop in mcptrace_loop_suspected_calls_total "
                               "(default 20)",
    "MCPTRACE_LOOP_WINDOW": "seconds over which identical calls are counted for MCPTRACE_LOOP_THRESHOLD (default 10)",
    "MCPTRACE_METRICS": "0 to turn off the Prometheus endpoint /metrics (default on); OTLP export is set by OTEL_*",
    "MCPTRACE_SPAN_EXPORT": "process (default) to build, encode and send spans in a child process, off "
                            "the server's interpreter lock; thread to do it on a thread of the server",
    "MCPTRACE_RESOURCES_MANIFEST": "manifest of hash-pinned remote tools and prompts to load at start-up",
}

ENV_FIELDS: Final[dict[str, str]] = {var: var.removeprefix("MCPTRACE_").lower() for var in ENVIRONMENT}
