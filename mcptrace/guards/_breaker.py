"""Circuit breakers, one per downstream dependency: closed → open → half-open → closed.

A breaker looks at the outcomes of the last `window` seconds. Once it has seen
at least `min_calls` and the failure share (errors and timeouts) reaches
`failure_rate`, it opens: calls fail at once, without touching the struggling
dependency. After `cooldown` it lets a single trial call through (half-open);
success closes it, failure opens it for another cooldown.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mcptrace._errors import DownstreamError
from mcptrace.telemetry._context import DownstreamCall

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

#: Called as hook(service, old_state, new_state) on every transition.
TransitionHook = Callable[[str, str, str], None]


@dataclass(frozen=True)
class BreakerPolicy:
    failure_rate: float = 0.5
    min_calls: int = 5
    window: float = 30.0
    cooldown: float = 5.0


class BreakerOpenError(DownstreamError):
    def __init__(self, service: str, retry_after: float) -> None:
        super().__init__(service, f"unavailable (circuit open; next try in {retry_after:.1f}s)")
        self.retry_after = retry_after
        self.data = {"service": service, "retryAfterMs": int(retry_after * 1000) + 1}


class CircuitBreaker:
    def __init__(
        self,
        service: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionHook | None = None,
    ) -> None:
        self.service = service
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._on_transition = on_transition
        self._state = CLOSED
        self._outcomes: deque[tuple[float, bool]] = deque()
        #: How many of `_outcomes` are failures, kept as they come and go (a sum per call grew with the rate).
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.policy.cooldown:
            self._move(HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker will let a trial call through (0 when it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.policy.cooldown - (self._clock() - self._opened_at))

    def admit(self) -> bool:
        """Whether a call may go ahead now; in half-open, only one trial at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record(self, ok: bool) -> None:
        now = self._clock()
        if self._state == HALF_OPEN:
            self._trial_running = False
            self._outcomes.clear()
            self._failures = 0
            if ok:
                self._move(CLOSED)
            else:
                self._open(now)
            return
        if self._state == OPEN:
            return  # a straggler from before the breaker opened
        self._outcomes.append((now, ok))
        if not ok:
            self._failures += 1
        while self._outcomes and now - self._outcomes[0][0] > self.policy.window:
            if not self._outcomes.popleft()[1]:
                self._failures -= 1
        if (
            len(self._outcomes) >= self.policy.min_calls
            and self._failures / len(self._outcomes) >= self.policy.failure_rate
        ):
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._outcomes.clear()
        self._failures = 0
        self._move(OPEN)

    def _move(self, new: str) -> None:
        old, self._state = self._state, new
        if old != new and self._on_transition is not None:
            with contextlib.suppress(Exception):  # a logging hook must not break the breaker
                self._on_transition(self.service, old, new)


class Breakers:
    """The breakers of one server, created on first use of each service."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionHook | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._on_transition = on_transition
        self._on_reject = on_reject
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, service: str) -> CircuitBreaker:
        breaker = self._breakers.get(service)
        if breaker is None:
            breaker = CircuitBreaker(
                service, self.policy, clock=self._clock, on_transition=self._on_transition
            )
            self._breakers[service] = breaker
        return breaker

    def states(self) -> dict[str, str]:
        return {name: b.state for name, b in sorted(self._breakers.items())}

    @contextlib.contextmanager
    def guard(self, service: str, call: DownstreamCall | None = None) -> Iterator[CircuitBreaker]:
        """Run one downstream call through `service`'s breaker.

        Raises `BreakerOpenError` (marking `call` failed) when the breaker refuses;
        otherwise records the outcome: an exception or `call.fail(...)` is a failure.
        """
        breaker = self.get(service)
        if not breaker.admit():
            if call is not None:
                call.fail("circuit open")
            if self._on_reject is not None:
                self._on_reject(service)
            raise BreakerOpenError(service, breaker.retry_after())
        ok = False
        try:
            yield breaker
            ok = call is None or call.error is None
        finally:
            breaker.record(ok)
