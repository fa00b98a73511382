"""What a load read, and the lines it could not use: plain data, no polars.

Kept apart from the loader so that answers read from the index (which need no
polars) report corrupt lines exactly as a load does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcptrace.logs._sources import Source

#: Corrupt lines kept verbatim in a report (all of them are counted).
MAX_EXAMPLES = 1000

@dataclass(frozen=True)
class CorruptLine:
    """A line that could not be used, and why."""

    file: str
    line: int
    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class LoadReport:
    """What a load read: files, lines, and the lines it could not use."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    bytes_read: int = 0
    corrupt_count: int = 0
    corrupt: list[CorruptLine] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def add_corrupt(self, source: Source, line: int, reason: str, text: bytes) -> None:
        self.corrupt_count += 1
        if len(self.corrupt) < MAX_EXAMPLES:
            self.corrupt.append(CorruptLine(source.name, line, reason, text[:200].decode("utf-8", "replace")))

    def summary(self) -> str:
        """One line for stderr: nothing when everything was readable."""
        if not self.corrupt_count and not self.unreadable:
            return ""
        parts = []
        if self.corrupt_count:
            shown = "; ".join(str(c) for c in self.corrupt[:3])
            more = f" (+{self.corrupt_count - 3} more)" if self.corrupt_count > 3 else ""
            parts.append(f"{self.corrupt_count} corrupt line(s) skipped: {shown}{more}")
        parts.extend(self.unreadable)
        return "; ".join(parts)
