"""Where log lines come from: files, globs, directories, rotated sets, compressed files and stdin.

Every reader in the analysis layer goes through `resolve_sources` and
`iter_blocks`, so each of them accepts the same inputs and reports the same
file names and line numbers.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from mcptrace import _fields as f
from mcptrace._errors import LogReadError

#: Bytes handed to the parser at a time (aligned to whole lines).
BLOCK_SIZE = 32 * 1024 * 1024

#: Names a directory may hold that we read as logs.
_LOG_NAME = re.compile(r".*\.(log|jsonl|ndjson)(\.\d+)?(\.gz|\.zst)?$")
_ROTATED = re.compile(r"^(?P<base>.+?)\.(?P<n>\d+)(?P<ext>\.gz|\.zst)?$")

#: Keys of which a log record has at least one.
_LOG_KEYS = (f.TIMESTAMP, f.EVENT, f.REQUEST_ID)
#: Top-level keys of OTLP's JSON encoding (a file exporter's output).
_OTLP_JSON_KEYS = ("resourceSpans", "resourceMetrics", "resourceLogs")
_SNIFF_BYTES = 1024 * 1024

#: Where indexes live (never read as logs); the same name as in `_manifest`.
INDEX_DIRNAME = ".mcptrace-index"

#: Directory the demo writes its logs to, looked for when no path is given.
DEMO_DIR = "mcptrace-demo"


#: What every reader accepts: one path, several, or None for the server's default log.
Paths = Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None
#: Called with (bytes done, bytes in all) as a long read goes on.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Source:
    """One readable log file; `name` is what error messages and reports show."""

    path: Path
    name: str

    @property
    def compression(self) -> str | None:
        suffix = self.path.suffix
        return {".gz": "gzip", ".zst": "zstd"}.get(suffix)

    def signature(self) -> tuple[str, int, int]:
        """(path, size, mtime_ns): changes whenever the file does."""
        st = self.path.stat()
        return (str(self.path.resolve()), st.st_size, st.st_mtime_ns)


def default_paths() -> list[Path]:
    """Where `mcptrace serve` writes (and its rotated siblings), else the demo's directory."""
    from mcptrace._config import Config

    log = Config.from_env().resolved_log_file
    if log.exists() or _rotated_siblings(log):
        return [log]
    demo = Path.cwd() / DEMO_DIR
    if demo.is_dir():
        return [demo]
    return [log]


def resolve_sources(paths: Paths = None) -> list[Source]:
    """Expand paths into an ordered, de-duplicated list of files, oldest data first.

    A plain log file brings its rotated siblings (`x.log.3`, `x.log.2`, `x.log.1`,
    `x.log`); a directory brings every log file below it (but not files of other
    JSON records, such as exported spans); `-` is stdin, spooled
    to a temporary file so it can be read more than once.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    given = list(paths) if paths else default_paths()
    out: list[Source] = []
    seen: set[Path] = set()

    def add(path: Path, name: str | None = None) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(Source(path, name or str(path)))

    for raw in given:
        text = os.fspath(raw)
        if text == "-":
            add(_spool_stdin(), "<stdin>")
            continue
        if glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise LogReadError(f"no log files match {text!r}")
            for p in _order_rotated(files):
                add(p)
            continue
        path = Path(text)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and _LOG_NAME.match(p.name)
                and INDEX_DIRNAME not in p.relative_to(path).parts
                and not _holds_other_records(p)
            )
            if not files:
                raise LogReadError(f"no log files in directory {text!r}")
            for p in _order_rotated(files):
                add(p)
            continue
        siblings = _rotated_siblings(path)
        if not path.exists() and not siblings:
            raise LogReadError(f"log file not found: {text}")
        for p in siblings:
            add(p)
        if path.exists():
            add(path)
    return out


def _holds_other_records(path: Path) -> bool:
    """The file holds exported telemetry (spans, or OTLP JSON), not log lines: its first line says so.

    Only a directory scan asks: a file named on the command line is always read,
    and anything else in a log directory is read as a log, bad lines reported.
    """
    try:
        with open_binary(Source(path, str(path))) as fh:
            first = fh.readline(_SNIFF_BYTES)
        record = orjson.loads(first)
    except Exception:  # unreadable, damaged or not JSON: reading it as a log reports why
        return False
    if not isinstance(record, dict) or any(key in record for key in _LOG_KEYS):
        return False
    return f.SPAN_ID in record or any(key in record for key in _OTLP_JSON_KEYS)


def _rotation_key(path: Path) -> tuple[str, int]:
    """Sort key: same base together, higher rotation number (older) first, live file last."""
    m = _ROTATED.match(path.name)
    if m:
        return (str(path.with_name(m.group("base"))), -int(m.group("n")))
    return (str(path), 0)


def _order_rotated(files: list[Path]) -> list[Path]:
    return sorted(files, key=_rotation_key)


def _rotated_siblings(path: Path) -> list[Path]:
    """`path.N[.gz|.zst]` files next to `path`, oldest (highest N) first."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    prefix = path.name + "."
    found: list[tuple[int, Path]] = []
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        m = _ROTATED.match(entry.name)
        if m and m.group("base") == path.name and entry.is_file():
            found.append((int(m.group("n")), entry))
    return [p for _, p in sorted(found, reverse=True)]


_stdin_spool: Path | None = None


def _spool_stdin() -> Path:
    global _stdin_spool
    if _stdin_spool is None:
        fd, name = tempfile.mkstemp(prefix="mcptrace-stdin-", suffix=".log")
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1024 * 1024)
        _stdin_spool = Path(name)
    return _stdin_spool


def open_binary(source: Source) -> BinaryIO:
    """The source's bytes, decompressed on the fly."""
    try:
        if source.compression == "gzip":
            return gzip.open(source.path, "rb")  # type: ignore[return-value]
        if source.compression == "zstd":
            import zstandard

            raw = open(source.path, "rb")  # noqa: SIM115
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
        return open(source.path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise LogReadError(f"cannot read {source.name}: {exc.strerror or exc}") from None


def iter_blocks(source: Source, *, block_size: int = BLOCK_SIZE) -> Iterator[tuple[int, bytes]]:
    """Yield (number of the block's first line, block of whole lines) until the end of the file.

    A last line without a newline is yielded as part of the final block: the
    parser decides whether it is whole.
    """
    line_no = 1
    rest = b""
    try:
        with open_binary(source) as fh:
            while True:
                chunk = fh.read(block_size)
                if not chunk:
                    break
                data = rest + chunk if rest else chunk
                cut = data.rfind(b"\n")
                if cut < 0:
                    rest = data
                    continue
                block, rest = data[: cut + 1], data[cut + 1 :]
                yield line_no, block
                line_no += block.count(b"\n")
    except (OSError, EOFError) as exc:
        raise LogReadError(f"cannot read {source.name}: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError and friends: a damaged compressed file
        raise LogReadError(f"cannot decompress {source.name}: {exc}") from None
    if rest:
        yield line_no, rest
