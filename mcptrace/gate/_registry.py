"""Gated registry updates: an `mcp.json` entry changes only when the gate passes against its URL.

The file keeps the common client layout, `{"mcpServers": {NAME: {"type": "http", "url": URL}}}`;
other top-level keys and other fields of an entry are left exactly as they were.
The file is read and checked before the gate runs, so a malformed file is
reported without touching the network, and it is replaced atomically, so a
reader never sees half an update.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mcptrace._errors import ConfigError
from mcptrace._files import atomic_write
from mcptrace.gate._gate import GateReport

SERVERS_KEY = "mcpServers"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class RegistryRefused(ConfigError):
    """The gate did not pass, so the registry was left as it was."""


@dataclass(frozen=True)
class RegistryChange:
    path: Path
    name: str
    url: str
    action: str  # "added", "changed" or "unchanged"
    previous_url: str | None


def read_registry(path: Path) -> dict[str, Any]:
    """The registry's content ({} for a file that does not exist yet); `ConfigError` if it is unusable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); nothing was changed") from None
    if not isinstance(data, dict) or not isinstance(data.get(SERVERS_KEY, {}), dict):
        raise ConfigError(f"{path}: expected an object with an {SERVERS_KEY!r} object; nothing was changed")
    return data


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(f"registry name {name!r}: use letters, digits, '.', '_' or '-' (at most 128)")


def apply_update(path: Path, *, name: str, url: str, report: GateReport) -> RegistryChange:
    """Write `name -> url` into the registry at `path` if `report` passed against `url`; refuse otherwise."""
    check_name(name)
    data = read_registry(path)
    if report.url != url:
        raise RegistryRefused(f"the gate ran against {report.url}, not {url}; nothing was changed")
    if not report.ok:
        failed = report.failed_step
        reason = f"{failed.name}: {failed.detail}" if failed else "no step ran"
        raise RegistryRefused(f"gate failed against {url} ({reason}); {path} was not changed")
    servers: dict[str, Any] = dict(data.get(SERVERS_KEY, {}))
    entry = servers.get(name)
    previous = entry.get("url") if isinstance(entry, dict) else None
    if isinstance(entry, dict) and previous == url:
        return RegistryChange(path, name, url, "unchanged", previous)
    updated = {**entry, "url": url} if isinstance(entry, dict) else {"type": "http", "url": url}
    servers[name] = updated
    data[SERVERS_KEY] = servers
    atomic_write(path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    return RegistryChange(path, name, url, "changed" if entry is not None else "added", previous)
