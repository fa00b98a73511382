"""`mcptrace proxy`: the checklist, the log contract and the forensics in front of any MCP server.

    client ─▶ proxy ─▶ target          (stdio: `_stdio`; HTTP: `_http`; stdio served over HTTP: `_bridge`)
                 │
                 └─ `_observe`: request ids, log lines, spans, metrics, guards, per message
    `_supervise` keeps a stdio target running; `_service` builds what every mode holds; `_run` runs a mode.
"""

#: No public names: this package is reached through the `mcptrace` command and what `mcptrace` exports.
__all__: list[str] = []
