"""Where a fleet dataset lives: a local folder or `s3://bucket/prefix`, behind one small interface.

Objects are written whole: locally under a temporary name then renamed, on S3
with one PutObject (never a multipart upload, which some S3-compatible servers
get wrong), so a reader sees an object entirely or not at all. S3 credentials,
region and endpoint come from the standard `AWS_*` variables, `AWS_ENDPOINT_URL`
included, so any S3-compatible server works. Reads count the bytes they fetch.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from mcptrace._errors import LogReadError

S3_SCHEME = "s3://"
#: The dataset's own tables (request ids, seals) live under this folder; the rows beside it.
META = "_mcptrace"
#: Written last in a shipment's folder: until then the shipment does not exist for readers.
SEAL = "seal.json"
#: A shipment's request-id table: first id, object, offset and length of each block of its chain store.
CHAIN_TABLE = "chains.idx"


def is_url(text: str) -> bool:
    return text.startswith(S3_SCHEME)


class Objects:
    """Keys relative to the dataset root; `bytes_read` counts what reads fetched."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        import pyarrow.fs as pafs

        text = os.fspath(dest)
        self.url = text
        self.bytes_read = 0
        self._count_lock = threading.Lock()  # reads run on several threads (`_fleet`)
        if is_url(text):
            bucket_prefix = text[len(S3_SCHEME) :].strip("/")
            if not bucket_prefix:
                raise LogReadError(f"not an S3 destination: {text!r} (use s3://bucket/prefix)")
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
            options: dict[str, Any] = {"allow_delayed_open": True}
            if endpoint:
                scheme, _, host = endpoint.partition("://")
                options.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
            self._fs: Any = pafs.S3FileSystem(**options)
            self._root = bucket_prefix
            self._local = False
        else:
            self._fs = pafs.LocalFileSystem()
            self._root = str(Path(text).resolve())
            self._local = True

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    def put(self, key: str, data: bytes) -> None:
        """Write one object whole (it appears complete or not at all)."""
        path = self._path(key)
        try:
            if self._local:
                target = Path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
                return
            with self._fs.open_output_stream(path) as out:
                out.write(data)
        except OSError as exc:
            raise LogReadError(f"cannot write {key} to {self.url}: {_short(exc)}") from None

    def get(self, key: str) -> bytes:
        try:
            with self._fs.open_input_stream(self._path(key)) as fh:
                data: bytes = fh.read()
        except OSError as exc:
            raise LogReadError(f"cannot read {key} from {self.url}: {_short(exc)}") from None
        return self._counted(data)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with self._fs.open_input_file(self._path(key)) as fh:
                data: bytes = fh.read_at(length, offset)
        except OSError as exc:
            raise LogReadError(f"cannot read {key} from {self.url}: {_short(exc)}") from None
        return self._counted(data)

    def _counted(self, data: bytes) -> bytes:
        with self._count_lock:
            self.bytes_read += len(data)
        return data

    def list(self, prefix: str) -> dict[str, int]:
        """Keys under `prefix` (a folder, without a trailing slash) with their sizes; hidden temporaries left out."""
        import pyarrow.fs as pafs

        try:
            infos = self._fs.get_file_info(pafs.FileSelector(self._path(prefix), recursive=True, allow_not_found=True))
        except OSError as exc:
            raise LogReadError(f"cannot list {self.url}: {_short(exc)}") from None
        start = len(self._root) + 1
        return {
            i.path[start:]: i.size
            for i in infos
            if i.type == pafs.FileType.File and not i.base_name.startswith(".")
        }


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
