"""The bundled production MCP server (`mcptrace serve`)."""

#: No public names: this package is reached through the `mcptrace` command and what `mcptrace` exports.
__all__: list[str] = []
