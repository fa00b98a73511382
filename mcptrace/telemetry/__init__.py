"""Telemetry the server emits: JSON log lines now, spans and metrics alongside."""
