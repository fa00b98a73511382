"""A log file's lines, counted and split by polars' CSV reader on every core, without parsing JSON."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl

__all__ = ["LINE_CHUNK_BYTES", "count_lines", "scan_lines", "small_line_chunks"]


#: Bytes per chunk when polars' CSV reader splits a log into lines. Its own default grows with the
#: file, to hundreds of MB in flight on a GB log; at 1 MB the split holds about 80 MB, as fast.
LINE_CHUNK_BYTES = 1 << 20
_CSV_CHUNK_VARIABLE = "POLARS_CSV_CHUNK_SIZE"


@contextmanager
def small_line_chunks() -> Iterator[None]:
    """`LINE_CHUNK_BYTES` chunks for the queries collected inside (polars reads the variable at collect
    time); a value the user set is left alone."""
    if _CSV_CHUNK_VARIABLE in os.environ:
        yield
        return
    os.environ[_CSV_CHUNK_VARIABLE] = str(LINE_CHUNK_BYTES)
    try:
        yield
    finally:
        os.environ.pop(_CSV_CHUNK_VARIABLE, None)


def scan_lines(path: os.PathLike[str] | str) -> pl.LazyFrame:
    """A file's lines as one text column, split by polars' CSV reader on every core.

    No quote character and a separator that JSON text cannot hold unescaped: a
    row is a line, whatever it contains. Bytes that are not UTF-8 become U+FFFD
    (such a line is judged from its raw bytes, see `_load`), never an error.
    """
    return pl.scan_csv(
        os.fspath(path),
        has_header=False,
        separator="\x1f",
        quote_char=None,
        schema={"line": pl.String},
        encoding="utf8-lossy",
    )


def count_lines(path: os.PathLike[str] | str) -> int:
    """Newline-terminated lines plus a last line without one (a byte count, no parsing).

    polars' CSV reader counts rows without splitting fields, on every core: with
    no quote character and a separator JSON cannot hold, its rows are the lines.
    """
    try:
        return int(scan_lines(path).select(pl.len()).collect().item())
    except Exception:  # polars could not read it as text: count the bytes ourselves
        return _count_newlines(path)


def _count_newlines(path: os.PathLike[str] | str) -> int:
    lines = 0
    last = b"\n"
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(16 * 1024 * 1024)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            chunk = view[:n]
            lines += buf.count(b"\n", 0, n)
            last = bytes(chunk[-1:])
    return lines + (0 if last == b"\n" else 1)
