"""Revocations shared through Redis: published once, applied by every replica before the command returns.

`mcptrace token revoke --redis-url` stores the revoked credential keys in a Redis
set and publishes them on a channel in one transaction, then waits until every
live replica has confirmed. Each replica runs a `RevocationFeed`: subscribed to
that channel, it adds published keys to its in-memory `RevokedKeys` *before* it
confirms, so once the command has returned no replica admits a request that
starts afterwards. Checking a request costs a set lookup, never a round trip.

A replica that (re)connects subscribes first and then reads the whole set, so
nothing published in between is missed. While a replica is cut off from Redis
its feed is down: it keeps refusing everything it had learnt (fail static), and
it stops announcing itself, so a revocation made meanwhile names it as
unconfirmed rather than claiming it. Replicas announce themselves in a sorted
set scored by Redis's own clock (no clock skew between hosts).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from mcptrace import _fields as f
from mcptrace.guards._backend import import_redis
from mcptrace.telemetry._log import EventLogger

#: How often a replica announces itself, and how long an announcement lasts.
HEARTBEAT_SECONDS = 1.0
ANNOUNCEMENT_MS = 3000

# KEYS: replicas; ARGV: replica name, ms the announcement lasts. Scored by Redis's clock.
_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return now
"""
# KEYS: replicas. The replicas whose announcement has not run out.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""


def replica_name(configured: str | None) -> str:
    """How a replica names itself in confirmations: `MCPTRACE_REPLICA_ID`, else host and process."""
    return configured or f"{socket.gethostname()}:{os.getpid()}"


class RevokedKeys:
    """The credential keys this process refuses, whatever its token store says."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Iterable[str]) -> None:
        self._keys.update(keys)


class RevocationFeed:
    """Keeps `keys` in step with Redis for as long as `run()` runs (a task of the server's lifespan)."""

    def __init__(
        self,
        url: str,
        keys: RevokedKeys,
        *,
        replica: str,
        logger: EventLogger,
        prefix: str = "mcptrace",
        timeout: float = 0.05,
    ) -> None:
        aioredis = import_redis()
        self.keys = keys
        self.replica = replica
        self.logger = logger
        self.prefix = prefix
        #: Deadline of each command; reading the whole set at (re)connection gets a little longer.
        self.timeout = timeout
        self._commands: Any = aioredis.from_url(url, socket_timeout=max(timeout, 1.0),
                                                socket_connect_timeout=max(timeout, 1.0))
        self._subscriber: Any = aioredis.from_url(url, socket_connect_timeout=max(timeout, 1.0))
        self._announce = self._commands.register_script(_ANNOUNCE)
        #: Whether the feed is subscribed and synchronised now (for /health).
        self.up = False
        self.last_error: str | None = None
        self._logged_error: str | None = None
        self.synced = anyio.Event()

    @property
    def channel(self) -> str:
        return f"{self.prefix}:revocations"

    async def run(self) -> None:
        """Subscribe, synchronise, apply and confirm; on any failure, say so once and start again."""
        backoff = 0.1
        while True:
            try:
                await self._follow()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                self._down(f"{type(exc).__name__}: {exc}"[:200])
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _follow(self) -> None:
        pubsub = self._subscriber.pubsub()
        try:
            with anyio.fail_after(max(self.timeout, 1.0)):
                await pubsub.subscribe(self.channel)
                members = await self._commands.smembers(f"{self.prefix}:revoked")
                await self._announce(keys=[f"{self.prefix}:replicas"], args=[self.replica, ANNOUNCEMENT_MS])
            self.keys.add(m.decode() if isinstance(m, bytes) else str(m) for m in members)
            self._up(len(members))
            next_beat = time.monotonic() + HEARTBEAT_SECONDS
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEARTBEAT_SECONDS / 2)
                if message is not None and message.get("type") == "message":
                    await self._apply(message["data"])
                if time.monotonic() >= next_beat:
                    with anyio.fail_after(max(self.timeout, 0.5)):
                        await self._announce(keys=[f"{self.prefix}:replicas"], args=[self.replica, ANNOUNCEMENT_MS])
                    next_beat = time.monotonic() + HEARTBEAT_SECONDS
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(0.5):
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    async def _apply(self, data: bytes) -> None:
        """Refuse the published keys from now on, then confirm to whoever published them."""
        try:
            message = orjson.loads(data)
            keys = [str(k) for k in message["keys"]]
            ack = message.get("ack")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        self.keys.add(keys)
        if isinstance(ack, str) and ack.startswith(f"{self.prefix}:ack:"):
            with anyio.fail_after(max(self.timeout, 0.5)):
                pipe = self._commands.pipeline(transaction=False)
                pipe.rpush(ack, self.replica)
                pipe.pexpire(ack, 60_000)
                await pipe.execute()

    def _up(self, count: int) -> None:
        self.up, self.last_error = True, None
        self.synced.set()
        self.logger.emit(f.EV_REVOCATION_FEED, "info", **{
            f.STATUS: f.SUCCESS, f.SERVICE: "redis", f.COUNT: count,
            f.MESSAGE: f"revocations synchronised ({count} revoked keys); following {self.channel}",
        })

    def _down(self, error: str) -> None:
        was_up, self.up, self.last_error = self.up, False, error
        if was_up or error != self._logged_error:  # one line per loss, not one per reconnection attempt
            self._logged_error = error
            self.logger.emit(f.EV_REVOCATION_FEED, "warning", **{
                f.STATUS: f.FAILURE, f.SERVICE: "redis", f.ERROR: error,
                f.MESSAGE: "revocation feed lost: revocations known so far still apply; new ones wait for Redis",
            })

    async def aclose(self) -> None:
        for client in (self._commands, self._subscriber):
            try:
                await client.aclose()
            except Exception:
                pass


@dataclass(frozen=True)
class Confirmation:
    """Which live replicas confirmed a published revocation."""

    live: frozenset[str]
    confirmed: frozenset[str]

    @property
    def missing(self) -> frozenset[str]:
        return self.live - self.confirmed


async def publish_revocation(
    url: str,
    keys: list[str],
    *,
    prefix: str = "mcptrace",
    timeout: float = 2.0,
    confirm_timeout: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> Confirmation:
    """Store and publish `keys` (one transaction), then wait for every live replica to confirm.

    Raises when Redis cannot be reached or refuses the transaction: then nothing
    was stored. Replicas that do not confirm within `confirm_timeout` are listed
    in the result's `missing`; the revocation is stored either way.
    """
    aioredis = import_redis()
    client: Any = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    ack = f"{prefix}:ack:{os.urandom(12).hex()}"
    try:
        with anyio.fail_after(timeout):
            live = {_text(r) for r in await client.eval(_LIVE, 1, f"{prefix}:replicas")}
            pipe = client.pipeline(transaction=True)
            pipe.sadd(f"{prefix}:revoked", *keys)
            pipe.publish(f"{prefix}:revocations", orjson.dumps({"keys": keys, "ack": ack}))
            _, receivers = await pipe.execute()
        confirmed: set[str] = set()
        deadline = clock() + confirm_timeout
        while (len(confirmed) < receivers or not live <= confirmed) and (left := deadline - clock()) > 0:
            answer = await client.blpop([ack], timeout=max(0.01, min(left, 0.5)))
            if answer is not None:
                confirmed.add(_text(answer[1]))
        return Confirmation(frozenset(live), frozenset(confirmed))
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await client.aclose()
            except Exception:
                pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
