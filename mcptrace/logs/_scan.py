"""Where a byte string occurs in a large file: searched in memory-mapped windows on every CPU.

CPython's `bytes.find` holds the GIL, so it searches on one core. Looking up
one request in gigabytes of logs is exactly that search, so here a few threads
each map a window of the file read-only, search it with libc's `memmem` and
unmap it, all through ctypes, which releases the GIL: the threads run in
parallel. Reading the pages in place costs far less than copying them out with
`read`, and mapping one window at a time keeps the resident memory at a few
windows whatever the size of the file. Without a libc that has `memmem`
(Windows) the same loop runs on one thread with `mmap.find`.
"""

from __future__ import annotations

import itertools
import mmap
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

#: Bytes each thread maps and searches at a time (a multiple of the mapping granularity).
WINDOW_BYTES = 16 * 1024 * 1024
#: Files smaller than this are searched on the calling thread only.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
MAX_THREADS = 8

#: search(fd, offset, length, needle) -> offsets of the needle within that window.
_WindowSearch = Callable[[int, int, int, bytes], list[int]]


def find_all(
    path: str | os.PathLike[str],
    needle: bytes,
    *,
    threads: int | None = None,
    window_bytes: int | None = None,
) -> list[int]:
    """Byte offsets of every occurrence of `needle` in the file (overlapping ones too), ascending.

    `threads` defaults to the CPUs this process may use (one for small files).
    """
    if not needle:
        raise ValueError("empty needle")
    granularity = mmap.ALLOCATIONGRANULARITY
    window = -(-(window_bytes or WINDOW_BYTES) // granularity) * granularity
    native = _native_search()
    search = native or _search_with_mmap_module
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        n_windows = -(-size // window)
        if threads is None:
            threads = _cpus() if size >= PARALLEL_MIN_BYTES else 1
        n_threads = max(1, min(threads, MAX_THREADS, n_windows)) if native is not None else 1
        # Each window is searched with len(needle) - 1 bytes of the next one, so an occurrence
        # that straddles two windows is found by the window it starts in (no other window can hold it).
        overlap = len(needle) - 1
        windows = itertools.count()  # shared: each thread takes the next window (next() is atomic)
        found: list[list[int]] = [[] for _ in range(n_threads)]
        errors: list[BaseException] = []

        def work(out: list[int]) -> None:
            try:
                for index in windows:
                    if index >= n_windows:
                        return
                    start = index * window
                    hits = search(fd, start, min(window + overlap, size - start), needle)
                    out.extend(start + hit for hit in hits)
            except BaseException as exc:  # re-raised on the calling thread
                errors.append(exc)

        if n_threads == 1:
            work(found[0])
        else:
            workers = [threading.Thread(target=work, args=(out,), daemon=True) for out in found]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        if errors:
            raise errors[0]
    return sorted(itertools.chain.from_iterable(found))


def _search_with_mmap_module(fd: int, offset: int, length: int, needle: bytes) -> list[int]:
    hits = []
    with mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=offset) as view:
        pos = view.find(needle)
        while pos >= 0:
            hits.append(pos)
            pos = view.find(needle, pos + 1)
    return hits


def _native_search() -> _WindowSearch | None:
    """Window search through libc's mmap, memmem and munmap, or None where libc lacks them."""
    global _NATIVE_LOADED, _NATIVE
    if _NATIVE_LOADED:
        return _NATIVE
    _NATIVE_LOADED = True
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # mmap64 takes a 64-bit offset on every glibc; elsewhere (macOS) off_t is 64-bit already.
        c_mmap = getattr(libc, "mmap64", None) or libc.mmap
        c_munmap, c_memmem = libc.munmap, libc.memmem
    except (OSError, AttributeError, TypeError):
        return None
    ptr, size_t = ctypes.c_void_p, ctypes.c_size_t
    c_mmap.restype, c_mmap.argtypes = ptr, [ptr, size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64]
    c_munmap.restype, c_munmap.argtypes = ctypes.c_int, [ptr, size_t]
    c_memmem.restype, c_memmem.argtypes = ptr, [ptr, size_t, ctypes.c_char_p, size_t]
    failed = ptr(-1).value
    # MAP_POPULATE fills the window's page table in one call instead of a fault per few pages.
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)

    def search(fd: int, offset: int, length: int, needle: bytes) -> list[int]:
        base: Any = c_mmap(None, length, mmap.PROT_READ, flags, fd, offset)
        if base is None or base == failed:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        hits = []
        try:
            pos = 0
            while pos < length:
                hit = c_memmem(base + pos, length - pos, needle, len(needle))
                if not hit:
                    break
                hits.append(hit - base)
                pos = hit - base + 1
        finally:
            c_munmap(base, length)
        return hits

    _NATIVE = search
    return search


_NATIVE_LOADED = False
_NATIVE: _WindowSearch | None = None


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def lines_at(path: str | os.PathLike[str], offsets: Iterable[int]) -> list[tuple[int, bytes]]:
    """(start offset, line without its newline) of each line holding one of the sorted `offsets`.

    A line holding several offsets is returned once.
    """
    out: list[tuple[int, bytes]] = []
    end = -1
    with open(path, "rb", buffering=0) as fh:
        fd = fh.fileno()
        for offset in offsets:
            if offset <= end:
                continue
            start = _line_start(fd, offset)
            line = _line_from(fd, start)
            out.append((start, line))
            end = start + len(line)
    return out


_STEP = 64 * 1024


def _line_start(fd: int, offset: int) -> int:
    pos = offset
    while pos > 0:
        lo = max(0, pos - _STEP)
        cut = os.pread(fd, pos - lo, lo).rfind(b"\n")
        if cut >= 0:
            return lo + cut + 1
        pos = lo
    return 0


def _line_from(fd: int, start: int) -> bytes:
    parts: list[bytes] = []
    pos = start
    while True:
        block = os.pread(fd, _STEP, pos)
        if not block:
            break
        cut = block.find(b"\n")
        if cut >= 0:
            parts.append(block[:cut])
            break
        parts.append(block)
        pos += len(block)
    return b"".join(parts)
