"""ASGI layer: a session belongs to the principal that opened it, and a principal holds only so many.

Every handshake-era session is recorded here, with its owner, when the answer
that opens it leaves. A later request naming it (`Mcp-Session-Id`: a POST, the
GET stream, a DELETE) is served only for the same principal: the same token, the
same JWT subject at the same issuer, or, without auth, the same declared client
at the same address. Anyone else gets exactly what a session that does not
exist gets (HTTP 404, JSON-RPC `-32600` "Session not found"), the session is
not touched, and a `request_refused` line (reason `forbidden`) names both
principals. A session id this table does not know is answered the same way
before the SDK sees it, so ownership never depends on the SDK's own timers.
Requests on the sessionless 2026-07-28 wire carry no session; one that names a
session anyway is judged the same way (its own session: served; any other: 404).

The table also counts each principal's open sessions for the per-principal
cap (`MCPTRACE_MAX_SESSIONS_PER_CALLER`): the admission layer reserves a place
before a session may be opened, this layer turns it into a session or gives it
back. Sessions leave the table when the client deletes them, when the SDK says
it no longer has them, or after the idle timeout with no request in flight (the
SDK's own rule).

With a replica id (`MCPTRACE_REPLICA_ID`), session ids are shown to clients as
`ID.<the SDK's id>`, so a proxy can send each session to the replica that holds
it (`deploy/nginx/mcptrace-replicas.conf`, `deploy/caddy/Caddyfile.replicas`);
logs carry the id the client sees.

This rule is enforced here, from the `Mcp-Session-Id` header and this table,
rather than through the SDK's session-owner check, which knows only OAuth
principals of its own auth stack and logs no principal.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcptrace import _fields as f
from mcptrace._errors import INVALID_REQUEST
from mcptrace.guards._identity import GuardSlot, Identity, declared_identity, slot_of
from mcptrace.guards._refusals import Refusals
from mcptrace.middleware._requestlog import SESSION_ID_STATE_KEY
from mcptrace.middleware._requests import mark_response_logged, send_jsonrpc_error

_SESSION = b"mcp-session-id"
_VERSION = b"mcp-protocol-version"
_HANDSHAKE_VERSIONS = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
#: Entries looked at per sweep for idle sessions: the table is swept a little at every change.
_SWEEP = 8


@dataclass
class SessionEntry:
    owner: Identity
    in_flight: int = 0
    last_active: float = 0.0


@dataclass
class Reservation:
    """A place in a principal's session quota, held while a request that may open a session runs."""

    principal: str
    done: bool = False


class SessionTable:
    """Open sessions by the id clients see, with their owners and a count per principal."""

    def __init__(
        self, *, idle_seconds: float, per_principal: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle_seconds = idle_seconds
        self.per_principal = per_principal
        self._clock = clock
        self._sessions: OrderedDict[str, SessionEntry] = OrderedDict()  # least recently active first
        self._held: Counter[str] = Counter()  # open sessions and reservations, per principal

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> SessionEntry | None:
        entry = self._sessions.get(session_id)
        if entry is not None and self._idle(entry, self._clock()):
            self.close(session_id)
            return None
        return entry

    def held(self, principal: str) -> int:
        self._sweep()
        return self._held[principal]

    def reserve(self, principal: str) -> Reservation | None:
        """A place in `principal`'s quota, or None when it holds as many sessions as it may."""
        if self.held(principal) >= self.per_principal:
            return None
        self._held[principal] += 1
        return Reservation(principal)

    def release(self, reservation: Reservation) -> None:
        if not reservation.done:
            reservation.done = True
            self._drop_one(reservation.principal)

    def open(self, session_id: str, owner: Identity, reservation: Reservation | None) -> None:
        """Record a session its opening answer just announced; it takes the reservation's place."""
        if reservation is not None and not reservation.done:
            reservation.done = True
        else:
            self._held[owner.principal] += 1
        self._sessions[session_id] = SessionEntry(owner, last_active=self._clock())
        self._sweep()

    def close(self, session_id: str) -> None:
        entry = self._sessions.pop(session_id, None)
        if entry is not None:
            self._drop_one(entry.owner.principal)

    def begin(self, session_id: str, entry: SessionEntry) -> None:
        entry.in_flight += 1
        self._sessions.move_to_end(session_id)

    def end(self, session_id: str, entry: SessionEntry) -> None:
        entry.in_flight -= 1
        entry.last_active = self._clock()
        if session_id in self._sessions:
            self._sessions.move_to_end(session_id)

    def _idle(self, entry: SessionEntry, now: float) -> bool:
        return entry.in_flight == 0 and now - entry.last_active >= self.idle_seconds

    def _sweep(self) -> None:
        now = self._clock()
        for _ in range(min(_SWEEP, len(self._sessions))):
            session_id, entry = next(iter(self._sessions.items()))
            if self._idle(entry, now):
                self.close(session_id)
            elif entry.in_flight:
                self._sessions.move_to_end(session_id)  # a long stream: look further
            else:
                return

    def _drop_one(self, principal: str) -> None:
        left = self._held[principal] - 1
        if left > 0:
            self._held[principal] = left
        else:
            del self._held[principal]


def handshake_era(scope: Scope) -> bool:
    """Whether the request speaks a handshake-era version (or names none, as the first ones did not)."""
    for key, value in scope["headers"]:
        if key == _VERSION:
            return value in _HANDSHAKE_VERSIONS
    return True


class SessionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        table: SessionTable,
        refusals: Refusals,
        replica_id: str | None = None,
        path: str = "/mcp",
    ) -> None:
        self.app = app
        self.table = table
        self.refusals = refusals
        self.tag = f"{replica_id}.".encode() if replica_id else b""
        self.path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slot = slot_of(scope) if scope["type"] == "http" else None
        if slot is None or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        named = next((v for k, v in scope["headers"] if k == _SESSION), None)
        if named is None:
            await self._may_open(scope, receive, send, slot)
            return
        public = named.decode("latin-1")
        slot.session_id = public
        entry = self.table.get(public)
        if entry is None:
            await _session_not_found(send)  # as the SDK says it, without asking the SDK
            return
        requester = slot.identity or declared_identity(entry.owner.caller_id, slot.client_address)
        if requester.principal != entry.owner.principal:
            await self._foreign(scope, send, slot, requester, entry.owner, public)
            return
        slot.identity = requester
        internal = named[len(self.tag):] if self.tag and named.startswith(self.tag) else named
        headers = [(k, internal if k == _SESSION else v) for k, v in scope["headers"]]
        scope = {**scope, "headers": headers, "state": {**scope.get("state", {}), SESSION_ID_STATE_KEY: public}}
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = self._tagged(message)
            await send(message)

        self.table.begin(public, entry)
        try:
            await self.app(scope, receive, watch)
        finally:
            self.table.end(public, entry)
            gone = status == 404 and handshake_era(scope)  # (on the other wire a 404 may mean an unknown method)
            if gone or (scope["method"] == "DELETE" and 200 <= status < 300):
                self.table.close(public)  # the SDK no longer has it, or the client ended it

    async def _may_open(self, scope: Scope, receive: Receive, send: Send, slot: GuardSlot) -> None:
        """A request without a session id: when its answer opens a session, record whose it is."""

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                session = next((v for k, v in message.get("headers", []) if k.lower() == _SESSION), None)
                if session is not None and slot.identity is not None:
                    message = self._tagged(message)
                    public = (self.tag + session if not session.startswith(self.tag) else session).decode("latin-1")
                    self.table.open(public, slot.identity, slot.reservation)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if slot.reservation is not None:
                self.table.release(slot.reservation)

    def _tagged(self, message: Message) -> Message:
        if not self.tag:
            return message
        headers = [
            (k, self.tag + v if k.lower() == _SESSION and not v.startswith(self.tag) else v)
            for k, v in message.get("headers", [])
        ]
        return {**message, "headers": headers}

    async def _foreign(
        self, scope: Scope, send: Send, slot: GuardSlot, requester: Identity, owner: Identity, session: str
    ) -> None:
        mark_response_logged(scope)  # recorded here as request_refused, not again as request_rejected
        self.refusals.record(
            f.R_FORBIDDEN, slot.request_id, http_status=404, caller_id=requester.caller_id,
            tenant=requester.tenant or None, principal=requester.principal, client_address=slot.client_address,
            method=scope["method"], session_id=session, session_owner=owner.principal,
            error="the session belongs to another principal",
        )
        await _session_not_found(send)


async def _session_not_found(send: Send) -> None:
    await send_jsonrpc_error(send, 404, INVALID_REQUEST, "Session not found")
