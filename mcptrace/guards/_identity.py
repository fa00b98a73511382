"""Who is calling: what an authenticated request carries past the auth layer."""

from __future__ import annotations

from dataclasses import dataclass

#: scope["state"] key holding the full `Identity` (allowed tools, revocation key) for the admission layer.
IDENTITY_DETAIL_KEY = "mcptrace.identity_detail"


@dataclass(frozen=True)
class Identity:
    """An authenticated caller.

    `tools` is None when every tool is allowed. `key` names the credential
    without revealing it (a prefix of its SHA-256), so revocations can be shared
    between replicas and logged safely.
    """

    caller_id: str
    tenant: str
    tools: frozenset[str] | None = None
    key: str = ""

    def allows(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools
