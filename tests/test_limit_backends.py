"""The rate-limit decision is one rule: in this process and in Redis's Lua script it gives the same answers.

Both backends run on one clock driven by hand (Redis is told the time instead of reading its own), on
random call sequences from random policies, with limits chosen so that waits often tie.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mcptrace.guards import Decision, Limit, LimitPolicy, MemoryBackend, RedisBackend
from tests.redis_server import Redis

#: Few distinct limits, so a caller bucket and a tool bucket often wait exactly as long.
LIMITS = [Limit(1, 1), Limit(1, 2), Limit(0.5, 2), Limit(2, 3), Limit(0.25, 1)]
#: Steps of the clock, binary fractions and a few others, zero included (calls at one instant).
STEPS = [0.0, 0.0, 0.125, 0.25, 0.5, 1.0, 0.3, 2.0, 7.5]


@dataclass(frozen=True)
class Call:
    advance: float
    caller: str
    tool: str | None
    include_caller: bool


policies = st.builds(
    LimitPolicy,
    caller=st.sampled_from(LIMITS),
    tools=st.dictionaries(st.sampled_from(["search", "report"]), st.sampled_from(LIMITS), max_size=2),
    default_tool=st.sampled_from(LIMITS),
    suspend_after=st.integers(1, 4),
    suspend_window=st.sampled_from([0.5, 1.0, 3.0]),
    suspend_seconds=st.sampled_from([0.25, 1.0, 2.5]),
)
calls = st.lists(
    st.builds(
        Call,
        advance=st.sampled_from(STEPS),
        caller=st.sampled_from(["a", "b"]),
        tool=st.sampled_from([None, "search", "report", "ping"]),
        include_caller=st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Redis(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def answers(redis_url: str, policy: LimitPolicy, sequence: list[Call]) -> tuple[list[Decision], list[Decision]]:
    """Each backend's decisions for `sequence`, on one clock; Redis state is fresh (a new key prefix)."""
    clock = Clock()
    memory = MemoryBackend(clock=clock)

    async def run() -> tuple[list[Decision], list[Decision]]:
        redis = RedisBackend(redis_url, prefix=f"p{uuid.uuid4().hex}", timeout=5.0, clock=clock)
        try:
            mine, theirs = [], []
            for call in sequence:
                clock.now += call.advance
                args = (call.caller, call.tool, policy)
                mine.append(memory.decide_now(*args, include_caller=call.include_caller))
                theirs.append(await redis.decide(*args, include_caller=call.include_caller))
            return mine, theirs
        finally:
            await redis.aclose()

    return anyio.run(run)


TIE = LimitPolicy(caller=Limit(1, 2), default_tool=Limit(1, 2), suspend_after=3)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=policies, sequence=calls)
@example(policy=TIE, sequence=[Call(0.0, "a", "search", True)] * 4)
def test_memory_and_redis_decide_alike(redis_url: str, policy: LimitPolicy, sequence: list[Call]) -> None:
    mine, theirs = answers(redis_url, policy, sequence)
    assert mine == theirs


def test_on_a_tie_both_name_the_tool() -> None:
    """Caller and tool buckets alike and drained together: both wait one second; the tool is named."""
    memory = MemoryBackend(clock=Clock())
    decisions = [memory.decide_now("a", "search", TIE) for _ in range(3)]
    assert decisions[-1] == Decision(False, "tool", 1000)


def test_on_a_tie_redis_names_the_tool_too(redis_url: str) -> None:
    mine, theirs = answers(redis_url, TIE, [Call(0.0, "a", "search", True)] * 3)
    assert mine[-1] == theirs[-1] == Decision(False, "tool", 1000)


def test_suspensions_and_their_end_agree(redis_url: str) -> None:
    policy = LimitPolicy(caller=Limit(1, 1), default_tool=Limit(1, 1), suspend_after=2, suspend_seconds=2.5)
    sequence = [Call(0.0, "a", None, True)] * 3 + [Call(1.0, "a", None, True), Call(1.5, "a", None, True)]
    mine, theirs = answers(redis_url, policy, sequence)
    assert mine == theirs
    assert [(d.allowed, d.scope, d.retry_after_ms, d.suspended_now) for d in mine] == [
        (True, None, 0, False),
        (False, "caller", 1000, False),
        (False, "suspended", 2500, True),
        (False, "suspended", 1500, False),
        (True, None, 0, False),
    ]
