"""The bundled production MCP server (`mcptrace serve`)."""
