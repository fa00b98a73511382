"""Telemetry lost on its way out, counted by signal and reason; shared by every exporter of a process."""

from __future__ import annotations

import threading
from collections import Counter


class DropCounter:
    """Items each signal lost, by reason (`queue_full`, `export_failed`); safe across threads."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, signal: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(signal, reason)] += n

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, signal: str | None = None) -> int:
        return sum(n for (s, _), n in self.snapshot().items() if signal is None or s == signal)
