"""Telemetry the server emits: JSON log lines now, spans and metrics alongside."""

#: No public names: this package is reached through the `mcptrace` command and what `mcptrace` exports.
__all__: list[str] = []
