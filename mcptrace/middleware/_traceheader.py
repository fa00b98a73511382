"""SDK middleware: continue the caller's trace from the HTTP `traceparent` header.

The SDK's own span middleware continues a trace from `params._meta.traceparent`
only. Placed ahead of it, this makes the header's context the ambient one when
`_meta` carries none, so the SDK's SERVER span becomes the caller's child
either way (`_meta` wins when both are present, as the SDK decides).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract

TRACEPARENT = "traceparent"


class TraceHeaderMiddleware:
    """Context-tier SDK middleware; a no-op for stdio and for requests without the header."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        headers: Mapping[str, str] | None = getattr(ctx.request, "headers", None)
        if not headers or TRACEPARENT not in headers or (ctx.meta and TRACEPARENT in ctx.meta):
            return await call_next(ctx)
        try:
            parent = extract(headers)
        except Exception:
            return await call_next(ctx)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            return await call_next(ctx)
        token = otel_context.attach(parent)
        try:
            return await call_next(ctx)
        finally:
            otel_context.detach(token)
