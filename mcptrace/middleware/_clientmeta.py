"""What a request says about its client: protocol era, client name and version, trace context.

On the 2026-07-28 wire every request carries these in `params._meta`
(`io.modelcontextprotocol/protocolVersion`, `.../clientInfo`); in the handshake
era they come from `initialize` and live on the session. Trace context is the
W3C `traceparent` / `baggage` pair a client may put in `_meta`; it is parsed
with OpenTelemetry's own propagators, so malformed values are ignored the same
way every OpenTelemetry service ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"

_TRACECONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()
#: Baggage kept per line: at most this many entries, each value cut to this many characters.
MAX_BAGGAGE_ENTRIES = 32
MAX_BAGGAGE_VALUE = 256


@dataclass(frozen=True)
class ClientMeta:
    protocol_version: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    trace_id: str | None = None
    parent_span_id: str | None = None
    baggage: list[dict[str, str]] | None = None


def read_client_meta(ctx: Any) -> ClientMeta:
    """Everything the request and its session tell about the client; never raises."""
    try:
        meta: Mapping[str, Any] = ctx.meta or {}
    except Exception:
        meta = {}
    params = getattr(ctx, "params", None) or {}
    name, version = client_info(ctx)
    trace_id, parent = _traceparent(meta)
    return ClientMeta(
        protocol_version=_protocol_version(ctx, meta, params),
        client_name=_short(name),
        client_version=_short(version),
        trace_id=trace_id,
        parent_span_id=parent,
        baggage=_baggage(meta),
    )


def client_info(ctx: Any) -> tuple[str | None, str | None]:
    """(name, version) the client declared: per request on the modern wire, at `initialize` before it."""
    meta = getattr(ctx, "meta", None)
    info: Any = meta.get(META_CLIENT_INFO) if meta else None
    if info is None and getattr(ctx, "method", None) == "initialize":
        info = (getattr(ctx, "params", None) or {}).get("clientInfo")
    if info is None:
        params = getattr(getattr(ctx, "session", None), "client_params", None)
        info = getattr(params, "client_info", None)
    if isinstance(info, Mapping):
        return _text(info.get("name")), _text(info.get("version"))
    if info is not None:
        return _text(getattr(info, "name", None)), _text(getattr(info, "version", None))
    return None, None


def _protocol_version(ctx: Any, meta: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    declared = meta.get(META_PROTOCOL_VERSION)
    if declared is None and getattr(ctx, "method", None) == "initialize":
        declared = params.get("protocolVersion")
    if declared is None:
        declared = getattr(ctx, "protocol_version", None)
    return _short(_text(declared))


def _traceparent(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    value = meta.get("traceparent")
    if not isinstance(value, str):
        return None, None
    carrier = {"traceparent": value}
    state = meta.get("tracestate")
    if isinstance(state, str):
        carrier["tracestate"] = state
    span = trace.get_current_span(_TRACECONTEXT.extract(carrier)).get_span_context()
    if not span.is_valid:
        return None, None
    return format(span.trace_id, "032x"), format(span.span_id, "016x")


def _baggage(meta: Mapping[str, Any]) -> list[dict[str, str]] | None:
    value = meta.get("baggage")
    if not isinstance(value, str) or not value:
        return None
    entries = otel_baggage.get_all(_BAGGAGE.extract({"baggage": value}))
    pairs = [
        {"key": str(key), "value": str(item)[:MAX_BAGGAGE_VALUE]}
        for key, item in list(entries.items())[:MAX_BAGGAGE_ENTRIES]
    ]
    return pairs or None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _short(value: str | None, limit: int = 200) -> str | None:
    return value[:limit] if value is not None else None


_TRACE_KEYS = ("traceparent", "tracestate", "baggage")


class TraceMetaGuard:
    """SDK middleware, outermost: drop non-string trace keys from `_meta` before anything parses them.

    OpenTelemetry's propagators expect strings; a client that sends
    `"baggage": 7` would otherwise fail its own request with an internal
    error. The call goes on as if no trace context had been sent.
    """

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        meta = ctx.meta
        if meta and any(key in meta and not isinstance(meta[key], str) for key in _TRACE_KEYS):
            ctx.meta = {k: v for k, v in meta.items() if k not in _TRACE_KEYS or isinstance(v, str)}
        return await call_next(ctx)
