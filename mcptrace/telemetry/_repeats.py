"""Agent loops as they happen: one caller repeating one call, counted in O(1) per call.

The forensics layer (`mcptrace loops`) finds loops after the fact, on the whole
log: a `repeat` there is the same tool with the same arguments and the same
answer, several times in a row. `RepeatWatch` is its online approximation, cheap
enough for every `tools/call`: it keeps, per (caller, tool, arguments hash,
result hash), when the current window started and how many calls fell in it,
and says "suspected" for every call from the `threshold`-th on within `window`
seconds of the first. Memory is bounded: the least recently repeated keys are
forgotten once `max_keys` are held.

What it does not see, by design (run `mcptrace loops` for these):

- cycles (A, B, A, B...) and near-duplicates (the same answer to arguments
  that differ slightly): only identical calls are compared;
- slow loops: fewer than `threshold` calls per `window` never count, and windows
  are tumbling (each starts at the first call after the last one ended), so a
  loop just at the rate can be missed in one window and caught in the next;
- "in a row": other calls in between do not break a repeat here;
- failed calls: only successful answers are fed to it (an identical failing call
  repeated is a retry storm, seen in the error rate, not a loop);
- a steady poller whose answer does not change is indistinguishable from a
  loop if it polls faster than `threshold` per `window` (2 calls a second with
  the defaults).

When more than `max_keys` distinct calls arrive within one loop's repeat
interval (a flood of distinct arguments), that loop's key is forgotten and its
count starts again: the counter then under-counts, never over-counts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

#: Identical calls within `DEFAULT_WINDOW` seconds that make a suspected loop: a sustained two
#: calls a second of one call with an unchanged answer. Agent frameworks retry 3-5 times; a health
#: probe calls once a second or slower; both stay below it.
DEFAULT_THRESHOLD = 20
DEFAULT_WINDOW = 10.0
#: Distinct (caller, tool, arguments, result) keys remembered: about 200 bytes each.
DEFAULT_MAX_KEYS = 10_000


class RepeatWatch:
    """Says, call by call, whether a call is one of a suspected loop (see the module docstring)."""

    def __init__(
        self,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        window: float = DEFAULT_WINDOW,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 2 or window <= 0 or max_keys < 1:
            raise ValueError("a repeat needs threshold >= 2, a positive window and max_keys >= 1")
        self.threshold = threshold
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        # key -> [window start, calls in the window]; most recently repeated last
        self._windows: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def seen(self, key: Hashable) -> bool:
        """Count one call; True when it is the `threshold`-th or later identical call in its window."""
        now = self._clock()
        windows = self._windows
        entry = windows.get(key)
        if entry is None or now - entry[0] > self.window:
            windows[key] = [now, 1.0]
            windows.move_to_end(key)
            if len(windows) > self.max_keys:
                windows.popitem(last=False)
            return False
        entry[1] += 1
        windows.move_to_end(key)
        return entry[1] >= self.threshold
