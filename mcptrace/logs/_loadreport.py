"""What a load read, and the lines it could not use: plain data, no polars.

Kept apart from the loader so that answers read from the index (which need no
polars) report corrupt lines exactly as a load does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

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

    #: Exact repeats of an earlier line of the same file: counted once, a few kept.
    duplicates_count: int = 0
    duplicates: list[CorruptLine] = field(default_factory=list)
    #: Lines of a schema version newer than this reader's, by version (read by today's rules).
    newer_schema: dict[int, int] = field(default_factory=dict)

    def segment_entry(self, *, examples: int = 50) -> dict[str, Any]:
        """What an index keeps of the load of one file, for `add_segment` to report it later."""
        return {
            "lines": self.lines,
            "corrupt_count": self.corrupt_count,
            "corrupt": [dataclasses.asdict(c) for c in self.corrupt[:examples]],
            "duplicates_count": self.duplicates_count,
            "duplicates": [dataclasses.asdict(c) for c in self.duplicates[:examples]],
            "newer_schema": {str(v): n for v, n in self.newer_schema.items()},
        }

    def add_segment(self, entry: dict[str, Any], name: str) -> None:
        """Report an indexed file's lines as its load did, under the name the file has now (it may have
        rotated since it was indexed)."""
        self.lines += entry["lines"]
        self.corrupt_count += entry["corrupt_count"]
        self.corrupt.extend(CorruptLine(**{**c, "file": name}) for c in entry["corrupt"])
        self.duplicates_count += entry.get("duplicates_count", 0)
        self.duplicates.extend(CorruptLine(**{**c, "file": name}) for c in entry.get("duplicates", []))
        for version, count in entry.get("newer_schema", {}).items():
            self.add_newer(int(version), count)

    def add_duplicate(self, source: Source, line: int) -> None:
        self.duplicates_count += 1
        if len(self.duplicates) < MAX_EXAMPLES:
            self.duplicates.append(CorruptLine(source.name, line, "exact repeat of an earlier line", ""))

    def add_newer(self, version: int, lines: int) -> None:
        self.newer_schema[version] = self.newer_schema.get(version, 0) + lines

    def add_note(self, source: Source, line: int, note: str) -> None:
        self.notes_count += 1
        if len(self.notes) < MAX_EXAMPLES:
            self.notes.append(CorruptLine(source.name, line, note, ""))

    def add_corrupt(self, source: Source, line: int, reason: str, text: bytes) -> None:
        self.corrupt_count += 1
        if len(self.corrupt) < MAX_EXAMPLES:
            self.corrupt.append(CorruptLine(source.name, line, reason, text[:200].decode("utf-8", "replace")))

    def in_line_order(self, since: tuple[int, int, int]) -> None:
        """Sort what was added after `since` (a `mark()`) by line number: one file's lines, in order."""
        c, n, d = since
        self.corrupt[c:] = sorted(self.corrupt[c:], key=lambda x: x.line)
        self.notes[n:] = sorted(self.notes[n:], key=lambda x: x.line)
        self.duplicates[d:] = sorted(self.duplicates[d:], key=lambda x: x.line)

    def merge(self, other: LoadReport) -> None:
        """Add what `other` read after what this one read (a later block of the same file, say)."""
        self.lines += other.lines
        self.bytes_read += other.bytes_read
        self.unreadable.extend(other.unreadable)
        for mine, theirs, count in (
            (self.corrupt, other.corrupt, "corrupt_count"),
            (self.notes, other.notes, "notes_count"),
            (self.duplicates, other.duplicates, "duplicates_count"),
        ):
            setattr(self, count, getattr(self, count) + getattr(other, count))
            mine.extend(theirs[: max(0, MAX_EXAMPLES - len(mine))])
        for version, lines in other.newer_schema.items():
            self.add_newer(version, lines)

    def mark(self) -> tuple[int, int, int]:
        return len(self.corrupt), len(self.notes), len(self.duplicates)

    def summary(self) -> str:
        """One line for stderr: nothing when everything was readable."""
        told = self.corrupt_count or self.unreadable or self.notes_count
        if not (told or self.duplicates_count or self.newer_schema):
            return ""
        parts = []
        for version, count in sorted(self.newer_schema.items()):
            parts.append(f"{count} line(s) of schema v{version}: upgrade mcptrace (read by the rules of this version)")
        if self.corrupt_count:
            shown = "; ".join(str(c) for c in self.corrupt[:3])
            more = f" (+{self.corrupt_count - 3} more)" if self.corrupt_count > 3 else ""
            parts.append(f"{self.corrupt_count} corrupt line(s) skipped: {shown}{more}")
        if self.notes_count:
            shown = "; ".join(str(c) for c in self.notes[:3])
            more = f" (+{self.notes_count - 3} more)" if self.notes_count > 3 else ""
            parts.append(f"{self.notes_count} value(s) of the wrong type read as null: {shown}{more}")
        if self.duplicates_count:
            shown = ", ".join(f"{c.file}:{c.line}" for c in self.duplicates[:3])
            more = f" (+{self.duplicates_count - 3} more)" if self.duplicates_count > 3 else ""
            parts.append(f"{self.duplicates_count} exact duplicate line(s) counted once: {shown}{more}")
        parts.extend(self.unreadable)
        return "; ".join(parts)
