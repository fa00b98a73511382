"""A labelled corpus of agent traffic: loops, and the things that look like loops but are not.

Each scenario is one caller's calls with a label saying what on-call should be
told about it:

- `loop`: an agent stuck (a fast repeat, an LLM-paced repeat, a cycle, reworded
  retries with the same empty answer, two concurrent conversations each stuck);
- `poll`: a health probe or a poller whose answer did not change, at a steady cadence;
- `retry`: one identical call failing again and again (with or without back-off);
- `none`: pagination, a poller whose answer changes, an ordinary agent.

`python -m tests.loop_corpus` prints precision and recall of `analysis.loops`
on it (the README quotes that table); `tests/test_loops_trust.py` pins them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LABELS = ("loop", "poll", "retry", "none")


@dataclass
class Scenario:
    name: str
    label: str
    caller: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: How many separate loop episodes the scenario holds (two conversations stuck: 2).
    episodes: int = 1


class _Writer:
    def __init__(self, caller: str, rng: random.Random, **fixed: Any) -> None:
        self.caller, self.rng, self.fixed = caller, rng, fixed
        self.rows: list[dict[str, Any]] = []
        self.t = T0 + timedelta(seconds=rng.uniform(0, 60))

    def call(
        self, tool: str, args: str, result: str, *, after: float, failed: bool = False, **extra: Any
    ) -> None:
        self.t += timedelta(seconds=after)
        self.rows.append(
            {
                "timestamp": self.t,
                "event": "tool_call",
                "mcp_request_id": f"req-{self.caller}-{len(self.rows):05d}",
                "caller_id": self.caller,
                "client_name": self.caller,
                "client_version": "1.0",
                "tool_name": tool,
                "arguments_hash": args,
                "result_hash": None if failed else result,
                "input_token_count": 12,
                "status": "error" if failed else "success",
                "error": "upstream answered HTTP 503" if failed else None,
                "duration_ms": 20.0,
                **self.fixed,
                **extra,
            }
        )


def _llm_gap(rng: random.Random) -> float:
    """Seconds an LLM agent thinks between two tool calls: 1 to 10 s, long-tailed."""
    return min(30.0, rng.lognormvariate(math.log(3.0), 0.6))


def _ordinary(w: _Writer, n: int) -> None:
    for _ in range(n):
        tool = w.rng.choice(("search", "fetch", "get_config"))
        key = w.rng.randrange(1000)
        w.call(tool, f"{tool}-{key}", f"r-{tool}-{key}", after=_llm_gap(w.rng))


def fast_repeat(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    _ordinary(w, rng.randint(0, 4))
    for _ in range(rng.randint(8, 200)):
        w.call("search", "refund-4471", "same", after=rng.uniform(0.05, 0.3))
    return Scenario("fast repeat", "loop", caller, w.rows)


def llm_repeat(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    _ordinary(w, rng.randint(1, 4))
    for _ in range(rng.randint(6, 40)):
        w.call("search", "order-4471", "same", after=_llm_gap(rng))
    return Scenario("LLM-paced repeat", "loop", caller, w.rows)


def cycle(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    _ordinary(w, rng.randint(0, 3))
    steps = ["plan", "search", "read", "summarise"][: rng.randint(2, 4)]
    for _ in range(rng.randint(3, 8)):
        for step in steps:
            w.call(step, f"{step}-args", f"{step}-same", after=_llm_gap(rng))
    return Scenario("cycle", "loop", caller, w.rows)


def reworded(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    _ordinary(w, rng.randint(0, 3))
    for i in range(rng.randint(6, 15)):
        w.call("search", f"wording-{i}", "no-results", after=_llm_gap(rng))
    return Scenario("reworded retries, same empty answer", "loop", caller, w.rows)


def two_conversations(rng: random.Random, caller: str) -> Scenario:
    """One sessionless client, two conversations told apart by baggage, each stuck on its own call."""
    w = _Writer(caller, rng)
    n = rng.randint(6, 15)
    for _ in range(n):
        for conversation in (f"{caller}-c1", f"{caller}-c2"):
            w.call(
                "search", f"q-{conversation}", f"a-{conversation}", after=rng.uniform(0.05, 0.25),
                baggage=[{"key": "run_id", "value": conversation}],
            )
    return Scenario("two concurrent conversations", "loop", caller, w.rows, episodes=2)


def probe(rng: random.Random, caller: str) -> Scenario:
    period = rng.choice((10.0, 30.0, 60.0))
    w = _Writer(caller, rng)
    for _ in range(rng.randint(30, 360)):
        w.call("ping", "{}", "pong", after=period * rng.uniform(0.97, 1.03))
    return Scenario(f"health probe every {period:g} s", "poll", caller, w.rows)


def jittered_probe(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    for _ in range(rng.randint(10, 60)):
        w.call("ping", "{}", "pong", after=rng.uniform(0.7, 1.3))
    return Scenario("probe once a second, jittered", "poll", caller, w.rows)


def steady_poller(rng: random.Random, caller: str) -> Scenario:
    """Polls a job every few seconds; the answer stays `running` until it turns `done`."""
    period = rng.uniform(1.0, 5.0)
    w = _Writer(caller, rng)
    _ordinary(w, rng.randint(0, 3))
    for i in range(rng.randint(8, 40)):
        w.call("job_status", "job-7", "running", after=period * rng.uniform(0.95, 1.05))
        del i
    w.call("job_status", "job-7", "done", after=period)
    return Scenario("job poller, answer unchanged until done", "poll", caller, w.rows)


def changing_poller(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    for i in range(rng.randint(10, 40)):
        w.call("deploy_status", "deploy", f"progress-{i // rng.randint(1, 3)}", after=rng.uniform(0.1, 2.0))
    return Scenario("poller, answer changes", "none", caller, w.rows)


def pagination(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    for page in range(rng.randint(5, 60)):
        w.call("list_orders", f"cursor-{page}", f"page-{page}", after=rng.uniform(0.02, 0.5))
    return Scenario("pagination", "none", caller, w.rows)


def retries(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    _ordinary(w, rng.randint(0, 3))
    backoff = rng.choice((0.0, 0.2))
    for i in range(rng.randint(6, 30)):
        w.call("fetch", "doc-9", "", after=rng.uniform(0.05, 0.2) + backoff * 2 ** min(i, 5), failed=True)
    return Scenario("identical failing call retried", "retry", caller, w.rows)


def ordinary(rng: random.Random, caller: str) -> Scenario:
    w = _Writer(caller, rng)
    _ordinary(w, rng.randint(5, 40))
    return Scenario("ordinary agent", "none", caller, w.rows)


BUILDERS: tuple[Callable[[random.Random, str], Scenario], ...] = (
    fast_repeat, llm_repeat, cycle, reworded, two_conversations, probe, jittered_probe, steady_poller,
    changing_poller, pagination, retries, ordinary,
)


def corpus(seed: int = 20, per_builder: int = 25) -> list[Scenario]:
    rng = random.Random(seed)
    return [
        build(rng, f"{build.__name__}-{i}") for build in BUILDERS for i in range(per_builder)
    ]


def frame(scenarios: list[Scenario]) -> pl.LazyFrame:
    from mcptrace.logs._parse import read_schema

    schema = read_schema()
    rows = [{name: r.get(name) for name in schema} for s in scenarios for r in s.rows]
    return pl.DataFrame(rows, schema=schema).sort("timestamp").lazy()


@dataclass
class Score:
    """Per label: scenarios labelled so, scenarios flagged so, and those both."""

    truth: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    #: Two-conversation scenarios whose conversations came out as two separate episodes.
    separated: int = 0
    concurrent: int = 0

    def precision(self, label: str) -> float:
        return self.hits.get(label, 0) / max(self.flagged.get(label, 0), 1)

    def recall(self, label: str) -> float:
        return self.hits.get(label, 0) / max(self.truth.get(label, 0), 1)


#: The episode kinds that count as each label's flag.
FLAGS = {"loop": ("repeat", "cycle", "near_duplicate"), "poll": ("poll",), "retry": ("retry_storm",)}


def score(scenarios: list[Scenario], episodes: pl.DataFrame) -> Score:
    """A scenario is flagged with a label when any episode of its caller has one of the label's kinds."""
    kinds: dict[str, set[str]] = {}
    counts: dict[str, list[int]] = {}
    for e in episodes.iter_rows(named=True):
        kinds.setdefault(e["caller_id"], set()).add(e["kind"])
        if e["kind"] in FLAGS["loop"]:
            counts.setdefault(e["caller_id"], []).append(e["count"])
    out = Score()
    for s in scenarios:
        out.truth[s.label] = out.truth.get(s.label, 0) + 1
        found = kinds.get(s.caller, set())
        for label, flag in FLAGS.items():
            if found & set(flag):
                out.flagged[label] = out.flagged.get(label, 0) + 1
                if s.label == label:
                    out.hits[label] = out.hits.get(label, 0) + 1
        if s.episodes == 2:
            out.concurrent += 1
            per_conversation = len(s.rows) // 2
            out.separated += sorted(counts.get(s.caller, [])) == [per_conversation, per_conversation]
    return out


def table(results: dict[str, Score]) -> str:
    lines = [
        "| detector | loops: precision | loops: recall | polls told apart | retry storms told apart "
        "| concurrent conversations separated |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in results.items():
        lines.append(
            f"| {name} | {s.precision('loop'):.2f} | {s.recall('loop'):.2f} | "
            f"{s.recall('poll'):.2f} | {s.recall('retry'):.2f} | {s.separated}/{s.concurrent} |"
        )
    return "\n".join(lines)


def evaluate(seed: int = 20, per_builder: int = 25) -> dict[str, Score]:
    """Today's defaults, and the detector before cadence, failures and runs were taken into account."""
    from mcptrace.analysis import loops

    scenarios = corpus(seed, per_builder)
    calls = frame(scenarios)
    now = loops(calls, include_polls=True).collect()
    before = loops(
        calls, by=("caller_id", "session_id"), include_polls=True, poll_cv=-1.0
    ).collect().with_columns(
        pl.when(pl.col("kind") == "retry_storm").then(pl.lit("repeat")).otherwise(pl.col("kind")).alias("kind")
    )
    return {"loops (defaults)": score(scenarios, now), "by caller and session, no cadence": score(scenarios, before)}


if __name__ == "__main__":
    results = evaluate()
    n = len(corpus())
    print(f"{n} scenarios ({len(BUILDERS)} kinds x {n // len(BUILDERS)}), seed 20\n")
    print(table(results))
