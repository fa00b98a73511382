"""Who is calling: what a request carries past the auth layer, and the slot the guards share per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: scope["state"] key holding the full `Identity` (allowed tools, revocation key) for the admission layer.
IDENTITY_DETAIL_KEY = "mcptrace.identity_detail"
#: scope["state"] key of the request's `GuardSlot`.
GUARD_SLOT_KEY = "mcptrace.guard_slot"

#: The declared name of a client that declared none (without auth).
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Identity:
    """A caller as the guards judge it.

    `tools` is None when every tool is allowed. `key` names the credential
    without revealing it (a prefix of its SHA-256), so revocations can be shared
    between replicas and logged safely. `principal` is whom a session, a session
    quota and a body budget belong to: the token's key, a JWT's issuer and
    subject, or, without auth, the declared client name *and* the client's
    address (a name alone costs nothing to claim).
    """

    caller_id: str
    tenant: str
    tools: frozenset[str] | None = None
    key: str = ""
    principal: str = ""
    #: False for callers known only by the name their client declared (no auth).
    authenticated: bool = True

    def __post_init__(self) -> None:
        if not self.principal:
            object.__setattr__(self, "principal", self.key or self.caller_id)

    def allows(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools

    @property
    def limit_key(self) -> str:
        """Whose rate-limit buckets a request draws from: the caller (all its tokens), or the principal."""
        return self.caller_id if self.authenticated else self.principal


def declared_identity(name: str | None, address: str | None) -> Identity:
    """A caller without auth: its client's declared name at its address."""
    name = (name or ANONYMOUS)[:200]
    return Identity(name, "", principal=f"{name}@{address or 'unknown'}", authenticated=False)


@dataclass
class GuardSlot:
    """What the guard layers learn about one request, shared by reference across the copies of its scope.

    The session layer reads at the answer what the inner layers found out: the
    caller (known only from the body without auth) and the session quota the
    admission layer reserved for it.
    """

    request_id: str | None
    client_address: str | None
    identity: Identity | None = None
    #: A held place in the caller's session quota, for a request that may open a session.
    reservation: Any = None
    #: The session id the client named (as it sees it), when it named one.
    session_id: str | None = None


def slot_of(scope: Any) -> GuardSlot | None:
    slot = scope.get("state", {}).get(GUARD_SLOT_KEY)
    return slot if isinstance(slot, GuardSlot) else None
