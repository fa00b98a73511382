"""The bearer-token store: tokens hashed at rest, each bound to a caller, a tenant, tools and an expiry.

The store is one JSON file, rewritten atomically by `mcptrace token add|revoke`:

    {"version": 1, "tokens": [{"caller_id": "agent-7", "tenant": "acme", "sha256": "…",
                               "tools": ["search_database"] | null, "expires_at": 1767225600 | null,
                               "created_at": 1764000000}]}

Only the SHA-256 of each token is kept (tokens are 256 random bits, so a fast
hash is enough). A running server looks at the file's metadata (one `stat`, about
a microsecond) on every request by default and reloads it when it changed, so a
revocation holds from the first request that starts after `mcptrace token
revoke` returned; `reload_interval` can space the checks out.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from mcptrace._errors import AuthError, ConfigError
from mcptrace.guards._identity import Identity

TOKEN_PREFIX = "mct_"
_FORMAT_VERSION = 1


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def credential_key(digest: str) -> str:
    """The loggable, shareable name of a credential: a short prefix of its hash."""
    return "tok:" + digest[:16]


@dataclass(frozen=True)
class TokenEntry:
    caller_id: str
    tenant: str
    sha256: str
    tools: tuple[str, ...] | None = None
    expires_at: float | None = None
    created_at: float = 0.0

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TokenEntry:
        tools = raw.get("tools")
        return cls(
            caller_id=str(raw["caller_id"]),
            tenant=str(raw["tenant"]),
            sha256=str(raw["sha256"]),
            tools=tuple(str(t) for t in tools) if tools is not None else None,
            expires_at=float(raw["expires_at"]) if raw.get("expires_at") is not None else None,
            created_at=float(raw.get("created_at") or 0.0),
        )

    def identity(self) -> Identity:
        tools = frozenset(self.tools) if self.tools is not None else None
        return Identity(self.caller_id, self.tenant, tools, credential_key(self.sha256))


class TokenStore:
    """Looks tokens up by hash; reloads the file when its size, mtime or inode change."""

    def __init__(
        self,
        path: Path,
        *,
        reload_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.reload_interval = reload_interval
        self._clock = clock
        self._wall = wall_clock
        self._by_hash: dict[str, TokenEntry] = {}
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self.reloads = 0
        self.reload_errors = 0
        self._refresh(force=True)

    # -- serving side ---------------------------------------------------------
    def authenticate(self, token: str) -> Identity:
        """The identity a token stands for; `AuthError` when it is unknown, revoked or expired."""
        self._refresh()
        entry = self._by_hash.get(token_hash(token))
        if entry is None:
            raise AuthError("invalid or revoked token")
        if entry.expires_at is not None and entry.expires_at <= self._wall():
            raise AuthError("token expired")
        return entry.identity()

    def _refresh(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._checked_at < self.reload_interval:
            return
        self._checked_at = now
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            signature = None
        if signature == self._signature and not force:
            return
        try:
            entries = _read(self.path)
        except ConfigError:
            self.reload_errors += 1
            if force and self._signature is None and signature is not None:
                raise
            return  # keep serving the last good table
        self._by_hash = {e.sha256: e for e in entries}
        self._signature = signature
        self.reloads += 1

    # -- administration (the CLI) ---------------------------------------------
    def entries(self) -> list[TokenEntry]:
        return _read(self.path)

    def add(
        self,
        caller_id: str,
        *,
        tenant: str,
        tools: Sequence[str] | None = None,
        ttl_seconds: float | None = None,
    ) -> str:
        """Mint a token for `caller_id`, store its hash, and return the token (shown once, never stored)."""
        if not caller_id.strip() or not tenant.strip():
            raise ConfigError("caller id and tenant must not be empty")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._wall()
        entry = TokenEntry(
            caller_id=caller_id,
            tenant=tenant,
            sha256=token_hash(token),
            tools=tuple(tools) if tools is not None else None,
            expires_at=now + ttl_seconds if ttl_seconds is not None else None,
            created_at=now,
        )
        with self._locked():
            _write(self.path, [*_read(self.path), entry])
        self._refresh(force=True)
        return token

    def revoke(
        self, caller_id: str, *, before_commit: Callable[[list[TokenEntry]], None] | None = None,
    ) -> list[TokenEntry]:
        """Remove every token of `caller_id`; returns what was removed.

        All or nothing: the new store is written to a temporary file first, then
        `before_commit(removed)` runs (publishing the revocation elsewhere, say),
        and only when it returns does the new file replace the old one. When it
        raises, the store is left as it was and the error propagates.
        """
        with self._locked():
            entries = _read(self.path)
            removed = [e for e in entries if e.caller_id == caller_id]
            if removed:
                tmp = _write_temporary(self.path, [e for e in entries if e.caller_id != caller_id])
                try:
                    if before_commit is not None:
                        before_commit(removed)
                    os.replace(tmp, self.path)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
        self._refresh(force=True)
        return removed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.with_name(self.path.name + ".lock"), "a")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"token store {self.path} cannot be locked: {exc.strerror or exc}") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[TokenEntry]:
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"token store {path} is unreadable: {exc}") from None
    try:
        return [TokenEntry.from_json(item) for item in raw["tokens"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"token store {path} is malformed: {exc!r}") from None


def _write(path: Path, entries: list[TokenEntry]) -> None:
    os.replace(_write_temporary(path, entries), path)


def _write_temporary(path: Path, entries: list[TokenEntry]) -> Path:
    """The store's next content, on disk beside it (readable by its owner only), ready to replace it."""
    data = {"version": _FORMAT_VERSION, "tokens": [asdict(e) for e in entries]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"token store {path} cannot be written: {exc.strerror or exc}") from None
    return tmp
