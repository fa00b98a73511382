"""Middleware that makes an MCP server observable and well-behaved on the wire.

ASGI layers (one file each) sit in front of the SDK's Streamable HTTP app;
`RequestLogMiddleware` sits inside the SDK's own middleware chain.
"""

#: No public names: this package is reached through the `mcptrace` command and what `mcptrace` exports.
__all__: list[str] = []
