"""Rate-limit policy and decisions: plain values shared by the limiter and its backends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mcptrace._errors import ConfigError

if TYPE_CHECKING:
    from mcptrace._config import Config

#: Decision scopes, also the `limit_scope` of `rate_limited` log lines.
SCOPE_CALLER = "caller"
SCOPE_TOOL = "tool"
SCOPE_SUSPENDED = "suspended"


@dataclass(frozen=True)
class Limit:
    """A token bucket: `rate` tokens per second, holding at most `burst`."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ConfigError(f"a rate limit needs rate > 0 and burst >= 1, got {self.rate}/{self.burst}")

    @classmethod
    def parse(cls, spec: str) -> Limit:
        """`RATE/BURST` in calls per second, e.g. `0.5/5`."""
        try:
            rate, burst = spec.split("/")
            return cls(float(rate), float(burst))
        except ValueError:
            raise ConfigError(f"bad rate limit {spec!r}: expected RATE/BURST, e.g. 10/20") from None


@dataclass(frozen=True)
class LimitPolicy:
    caller: Limit = Limit(50, 100)
    tools: Mapping[str, Limit] = field(default_factory=dict)
    default_tool: Limit = Limit(10, 20)
    suspend_after: int = 20
    suspend_window: float = 10.0
    suspend_seconds: float = 60.0

    def for_tool(self, tool: str) -> Limit:
        return self.tools.get(tool, self.default_tool)

    @classmethod
    def parse(
        cls,
        *,
        caller: str,
        tools: str,
        suspend_after: int,
        suspend_window: float,
        suspend_seconds: float,
    ) -> LimitPolicy:
        """From `RATE/BURST` and `TOOL=RATE/BURST,...` strings (`*` names the default tool limit)."""
        per_tool: dict[str, Limit] = {}
        default = cls.default_tool
        for item in filter(None, (part.strip() for part in tools.split(","))):
            name, sep, spec = item.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"bad tool rate limit {item!r}: expected TOOL=RATE/BURST")
            if name.strip() == "*":
                default = Limit.parse(spec.strip())
            else:
                per_tool[name.strip()] = Limit.parse(spec.strip())
        if suspend_after < 1 or suspend_window <= 0 or suspend_seconds <= 0:
            raise ConfigError("suspension needs suspend_after >= 1 and positive window and duration")
        return cls(Limit.parse(caller), per_tool, default, suspend_after, suspend_window, suspend_seconds)

    @classmethod
    def from_config(cls, config: Config) -> LimitPolicy:
        """The policy the `rate_limit_*` and `suspend_*` settings describe."""
        return cls.parse(
            caller=config.rate_limit_caller,
            tools=config.rate_limit_tools,
            suspend_after=config.suspend_after,
            suspend_window=config.suspend_window,
            suspend_seconds=config.suspend_seconds,
        )


@dataclass(frozen=True)
class Decision:
    """The answer for one request. `retry_after_ms` is the real wait until it would be admitted."""

    allowed: bool
    scope: str | None = None
    retry_after_ms: int = 0
    suspended_now: bool = False


ALLOWED = Decision(True)
