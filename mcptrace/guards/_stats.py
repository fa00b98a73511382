"""Counters of every guard decision, kept as plain numbers for a metrics exporter to read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GuardStats:
    """Monotonic counters; read them, never reset them (exporters compute rates).

    `rate_limited` and `auth_failures` are keyed by scope / reason;
    `breaker_transitions` by (service, new state); `refused` counts every
    refused request by its `refusal_reason` (the `request_refused` lines' reasons).
    """

    auth_ok: int = 0
    auth_failures: Counter[str] = field(default_factory=Counter)
    forbidden: int = 0
    admitted: int = 0
    rate_limited: Counter[str] = field(default_factory=Counter)
    suspensions: int = 0
    backend_errors: int = 0
    breaker_transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    breaker_rejections: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "auth_ok": self.auth_ok,
            "auth_failures": dict(self.auth_failures),
            "forbidden": self.forbidden,
            "admitted": self.admitted,
            "rate_limited": dict(self.rate_limited),
            "suspensions": self.suspensions,
            "backend_errors": self.backend_errors,
            "breaker_transitions": {f"{s}:{st}": n for (s, st), n in self.breaker_transitions.items()},
            "breaker_rejections": dict(self.breaker_rejections),
            "refused": dict(self.refused),
        }
