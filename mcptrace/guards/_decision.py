"""The rate-limit decision, written down once: the rule, its Python form and its Lua form side by side.

For one request of a caller at time `now` (seconds), drawing from `buckets`
(the caller's bucket, then the (caller, tool) bucket for a tool call):

1. **Suspended.** If the caller's suspension ends after `now`: refuse, scope
   `suspended`, retry after the milliseconds left (rounded up).
2. **Refill.** Each bucket holds `min(burst, tokens + (now - last) * rate)`;
   a bucket never seen (or forgotten) is full.
3. **Admit** when every bucket holds a whole token: take one from each.
4. **Violation** otherwise. The count starts afresh when its window began
   `suspend_window` or more seconds ago. At `suspend_after` violations the
   caller is suspended for `suspend_seconds` (scope `suspended`,
   `suspended_now`) and the count cleared.
5. **Refuse** by the bucket with the longest wait for a token,
   `(1 - tokens) / rate` rounded up to milliseconds. On a tie the later
   bucket names the refusal: the tool's, the narrower limit, which is the one
   the caller can do something about.

`MemoryBackend` runs the Python below; `RedisBackend` runs `DECIDE_LUA`, the
same steps in the same order with the same float arithmetic, so both give the
same answers (a property test drives both with one clock on random call
sequences). Redis forgets a key only once it can no longer change an answer:
its expiry is the time after which the rule would treat it as absent, plus a
margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mcptrace.guards._limits import Limit, LimitPolicy

#: Milliseconds Redis keeps state beyond the moment the rule stops reading it.
EXPIRY_MARGIN_MS = 60_000


def suspension_left_ms(until: float | None, now: float) -> int | None:
    """Step 1: milliseconds of suspension left, or None when the caller is not suspended."""
    if until is None or until <= now:
        return None
    return math.ceil((until - now) * 1000)


def refill(bucket: tuple[float, float] | None, limit: Limit, now: float) -> float:
    """Step 2: the level at `now` of a bucket left at (tokens, time); a bucket never seen (None) is full."""
    if bucket is None:
        return limit.burst
    tokens, last = bucket
    return min(limit.burst, tokens + max(0.0, now - last) * limit.rate)


def wait_for_token(level: float, limit: Limit) -> float:
    """Seconds until the bucket holds a whole token (0 when it does)."""
    return 0.0 if level >= 1 else (1 - level) / limit.rate


def count_violation(count: int, started: float | None, now: float, policy: LimitPolicy) -> tuple[int, float]:
    """Step 4: the violation count and its window's start, this violation included."""
    if started is None or now - started >= policy.suspend_window:
        count, started = 0, now
    return count + 1, started


def refusing_bucket(waits: Sequence[float]) -> int:
    """Step 5: index of the bucket that names the refusal: the longest wait, the later one on a tie."""
    return max(range(len(waits)), key=lambda i: (waits[i], i))


# KEYS: suspension (its end, a number), strikes (hash: count, started), then one hash per bucket (tokens, ts)
# ARGV: suspend_after, suspend_window s, suspend_seconds s, now ('' = Redis's clock), then rate and burst per bucket
# Returns {allowed, 1-based index of the refusing bucket (0: suspended), retry ms, suspended now}.
DECIDE_LUA = f"""
local margin = {EXPIRY_MARGIN_MS}
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local function num(x) return string.format('%.17g', x) end
-- 1. suspended
local ends = tonumber(redis.call('GET', KEYS[1]))
if ends and ends > now then return {{0, 0, math.ceil((ends - now) * 1000), 0}} end
-- 2. refill
local n = #KEYS - 2
local levels, waits = {{}}, {{}}
local blocked = false
for i = 1, n do
  local rate, burst = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  local v = redis.call('HMGET', KEYS[2 + i], 'tokens', 'ts')
  local level = tonumber(v[1]) or burst
  local ts = tonumber(v[2]) or now
  level = math.min(burst, level + math.max(0, now - ts) * rate)
  levels[i] = level
  waits[i] = 0
  if level < 1 then
    waits[i] = (1 - level) / rate
    blocked = true
  end
end
-- 3. admit
if not blocked then
  for i = 1, n do
    local rate, burst = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
    redis.call('HSET', KEYS[2 + i], 'tokens', num(levels[i] - 1), 'ts', num(now))
    redis.call('PEXPIRE', KEYS[2 + i], math.ceil(burst / rate * 1000) + margin)
  end
  return {{1, 0, 0, 0}}
end
-- 4. violation
local s = redis.call('HMGET', KEYS[2], 'count', 'started')
local count = tonumber(s[1]) or 0
local started = tonumber(s[2])
local window = tonumber(ARGV[2])
if started == nil or now - started >= window then
  count = 0
  started = now
end
count = count + 1
if count >= tonumber(ARGV[1]) then
  local seconds = tonumber(ARGV[3])
  redis.call('SET', KEYS[1], num(now + seconds), 'PX', math.ceil(seconds * 1000) + margin)
  redis.call('DEL', KEYS[2])
  return {{0, 0, math.ceil(seconds * 1000), 1}}
end
redis.call('HSET', KEYS[2], 'count', count, 'started', num(started))
redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + margin)
-- 5. refuse: the longest wait, the later bucket on a tie
local worst = 1
for i = 2, n do
  if waits[i] >= waits[worst] then worst = i end
end
return {{0, worst, math.ceil(waits[worst] * 1000), 0}}
"""
