"""Where an index lives and whether it still describes its sources.

An index is a directory beside the logs (`.mcptrace-index/<set>/`) holding one
segment per source file. A segment is named after the file's identity and
state (device, inode, size, modification time), so a rotation that renames
`mcptrace.log` to `mcptrace.log.1` keeps its segment, and a file that grew
gets a new one. The index is fresh when every source has its segment.
Imports nothing heavy: `chain` calls it on every run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from mcptrace.logs._sources import INDEX_DIRNAME

MANIFEST = "manifest.json"
#: Bumped when the index layout changes; older indexes are rebuilt.
INDEX_VERSION = 3


def segment_key(path: Path) -> str:
    st = path.stat()
    raw = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{INDEX_VERSION}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def index_dir(sources: Sequence[Any]) -> Path:
    """The index directory of a set of sources (beside the first one)."""
    names = "\n".join(sorted({str(Path(s.path).resolve().parent) for s in sources}))
    digest = hashlib.sha1(names.encode()).hexdigest()[:12]
    return Path(sources[0].path).resolve().parent / INDEX_DIRNAME / digest


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads((directory / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
        return None
    return data


def write_manifest(directory: Path, data: dict[str, Any]) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_bytes(orjson.dumps({"version": INDEX_VERSION, **data}, option=orjson.OPT_INDENT_2))
    os.replace(tmp, directory / MANIFEST)


def fresh_segments(sources: Sequence[Any]) -> tuple[Path, list[str]] | None:
    """(index dir, segment keys in source order) when every source is indexed as it is now."""
    if not sources or any(s.name == "<stdin>" for s in sources):
        return None
    try:
        directory = index_dir(sources)
        manifest = read_manifest(directory)
        if manifest is None:
            return None
        keys = [segment_key(Path(s.path)) for s in sources]
    except OSError:
        return None
    segments = manifest.get("segments", {})
    if all(k in segments for k in keys):
        return directory, keys
    return None


def fresh_index_dir(sources: Sequence[Any]) -> list[Path] | None:
    """Segment directories to search, or None when the index is missing or stale."""
    found = fresh_segments(sources)
    if found is None:
        return None
    directory, keys = found
    return [directory / "segments" / k for k in keys]
