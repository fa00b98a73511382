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
    #: Values of the wrong type read as null (their lines are kept): counted, a few kept.
    notes_count: int = 0
    notes: list[CorruptLine] = field(default_factory=list)

    def add_note(self, source: Source, line: int, note: str) -> None:
        self.notes_count += 1
        if len(self.notes) < MAX_EXAMPLES:
            self.notes.append(CorruptLine(source.name, line, note, ""))

    def add_corrupt(self, source: Source, line: int, reason: str, text: bytes) -> None:
        self.corrupt_count += 1
        if len(self.corrupt) < MAX_EXAMPLES:
            self.corrupt.append(CorruptLine(source.name, line, reason, text[:200].decode("utf-8", "replace")))

    def in_line_order(self, since: tuple[int, int]) -> None:
        """Sort what was added after `since` (a `mark()`) by line number: one file's lines, in order."""
        c, n = since
        self.corrupt[c:] = sorted(self.corrupt[c:], key=lambda x: x.line)
        self.notes[n:] = sorted(self.notes[n:], key=lambda x: x.line)

    def mark(self) -> tuple[int, int]:
        return len(self.corrupt), len(self.notes)

    def summary(self) -> str:
        """One line for stderr: nothing when everything was readable."""
        if not self.corrupt_count and not self.unreadable and not self.notes_count:
            return ""
        parts = []
        if self.corrupt_count:
            shown = "; ".join(str(c) for c in self.corrupt[:3])
            more = f" (+{self.corrupt_count - 3} more)" if self.corrupt_count > 3 else ""
            parts.append(f"{self.corrupt_count} corrupt line(s) skipped: {shown}{more}")
        if self.notes_count:
            shown = "; ".join(str(c) for c in self.notes[:3])
            more = f" (+{self.notes_count - 3} more)" if self.notes_count > 3 else ""
            parts.append(f"{self.notes_count} value(s) of the wrong type read as null: {shown}{more}")
        parts.extend(self.unreadable)
        return "; ".join(parts)
