"""Loopback binding, enforced in code: anything else is a deployment decision made out loud."""

from __future__ import annotations

import ipaddress

from mcptrace._errors import BindError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, allow_non_loopback: bool) -> bool:
    """Raise `BindError` for a non-loopback host without the override; True when the override is in use."""
    if is_loopback(host):
        return False
    if not allow_non_loopback:
        raise BindError(
            f"refusing to bind {host}: mcptrace serves on loopback (127.0.0.1) and expects a reverse proxy "
            "for TLS and external routing; pass --allow-non-loopback to bind it anyway"
        )
    return True
