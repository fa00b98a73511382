"""Opt-in bridge: every JSON log line also leaves as an OTLP log record.

The JSON file stays the source of truth; the bridge hands each finished record
to an OpenTelemetry logger (batched, bounded, on its own thread). The record's
scalar fields become attributes, the event name is the body and event name,
and the active span's context links the log to its trace.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from opentelemetry._logs import SeverityNumber

from mcptrace import _fields as f

_SEVERITY = {
    "debug": SeverityNumber.DEBUG, "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN, "error": SeverityNumber.ERROR,
}
_SKIP = {f.TIMESTAMP, f.LEVEL, f.EVENT, f.TRACE_ID, f.SPAN_ID}


class OtlpLogBridge:
    """An `EventLogger` listener that emits each record through an OpenTelemetry `LoggerProvider`."""

    def __init__(self, logger_provider: Any) -> None:
        self.logger = logger_provider.get_logger("mcptrace")

    def __call__(self, record: dict[str, Any]) -> None:
        attributes: dict[str, Any] = {}
        for key, value in record.items():
            if key in _SKIP or value is None:
                continue
            if isinstance(value, str | bool | int | float):
                attributes[key] = value
            else:  # lists and objects (downstream_calls) travel as JSON text
                attributes[key] = orjson.dumps(value, default=str).decode()
        level = str(record.get(f.LEVEL, "info"))
        event = str(record.get(f.EVENT, ""))
        self.logger.emit(
            timestamp=time.time_ns(), severity_number=_SEVERITY.get(level, SeverityNumber.INFO),
            severity_text=level.upper(), body=event, event_name=event, attributes=attributes,
        )
