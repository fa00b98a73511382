"""Agent loops found after the fact, across every agent that called the server.

Four kinds of episode, each per actor (by default a run: a session, a run id in
the baggage, the client's trace, or a caller's stretch of activity; see
`analysis.runs`), so two conversations of one client are never mixed up:

- `repeat`: the same tool with the same arguments and the same result, N times
  in a row (agent frameworks stop at 3 to 5; the default threshold is 5). Such
  runs of one call whose result changed in between (an answer that turned into
  a refusal) make one episode.
- `cycle`: a sequence of calls that repeats with a period of 2 to 6
  (A→B→A→B…), at least `cycle_repeats` times.
- `near_duplicate`: the same tool and the same result with arguments that
  differ (only the hash is logged, so "cosmetically" means: same result, the
  same estimated size within a token or two), N times in a row.
- `rate_spike`: a window in which an actor calls far more than it usually does.

The result is part of every key: the same arguments with a changing result is
polling or pagination, and is not flagged.

Two look-alikes are told apart from loops, because on-call cannot act on them
as loops:

- `retry_storm`: a `repeat` whose calls mostly failed: one caller retrying a
  failing call (a symptom of the failure, or a client without back-off);
- `poll`: a `repeat` or `cycle` at a steady cadence (the time from one repetition
  to the next varies by at most `poll_cv` of its mean, per call, and the calls are on average
  at least `poll_min_period` apart): a health probe or a poller whose answer did not change. Polls are
  left out unless `include_polls=True`.

Severity says what an episode burned, not only how many calls it made: a loop
at machine speed (two calls a second or more) is high once it has made 50
calls, a slow one only once it has gone on for ten minutes; many errors or a
very large count is high at any speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from mcptrace import _fields as f
from mcptrace.analysis._order import in_order
from mcptrace.analysis._runs import RUN_ID, assign_runs

KIND = "kind"
#: The kinds that are agent loops (what `loops` reports besides retry storms, spikes and polls).
LOOP_KINDS = ("repeat", "cycle", "near_duplicate")
EPISODE_COLUMNS = [
    KIND,
    f.CALLER_ID,
    f.SESSION_ID,
    "run",
    f.TOOL_NAME,
    "tools",
    "start",
    "end",
    "count",
    "errors",
    "rate",
    "period_s",
    "severity",
    "request_ids",
]
_ACTOR = "_actor"
_KEY = "_key"
_POS = "_pos"


def _joined(*columns: str) -> pl.Expr:
    """The columns' values as one text key (null as empty)."""
    return pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in columns], separator="\x1f")


def _calls(frame: pl.LazyFrame, by: Sequence[str], *, in_time_order: bool = False) -> pl.LazyFrame:
    """Tool calls in time order with an actor key and a call key (tool, arguments, result).

    `in_time_order` says `frame` is already in `_order`'s order (as `assign_runs` gives it): a stable
    sort by actor then puts each actor's calls in the same order as sorting by actor and time would.
    """
    keyed = frame.filter(pl.col(f.EVENT) == f.EV_TOOL_CALL).with_columns(
        _joined(*by).alias(_ACTOR), _joined(f.TOOL_NAME, f.ARGUMENTS_HASH, f.RESULT_HASH).alias(_KEY)
    )
    ordered = keyed.sort(_ACTOR, maintain_order=True) if in_time_order else keyed.pipe(in_order, _ACTOR)
    return ordered.with_columns(pl.int_range(pl.len()).over(_ACTOR).alias(_POS))


def severity(count: pl.Expr, rate: pl.Expr, seconds: pl.Expr, errors: pl.Expr) -> pl.Expr:
    """`high`, `medium` or `low` from what an episode burned: calls, calls per minute, time and errors."""
    fast = rate >= 120.0
    high = (fast & (count >= 50)) | (count >= 500) | ((seconds >= 600) & (rate >= 6.0)) | (errors >= 100)
    medium = (fast & (count >= 20)) | (count >= 100) | ((seconds >= 120) & (rate >= 2.0)) | (errors >= 20)
    return pl.when(high).then(pl.lit("high")).when(medium).then(pl.lit("medium")).otherwise(pl.lit("low"))


def _episode(kind: str, group: pl.LazyFrame, threshold: int, *, lag: int = 1) -> pl.LazyFrame:
    """Aggregate rows tagged with `_ep` into episodes of at least `threshold` calls.

    `period_s` is the median time between one call and the one `lag` calls later (a cycle's
    period), and `_cv` how much that varies (standard deviation over mean, the longest gap
    left out so that one pause does not hide a steady cadence).
    """
    seconds = (pl.col("end") - pl.col("start")).dt.total_milliseconds().cast(pl.Float64) / 1000.0
    gaps = pl.col(f.TIMESTAMP).sort().diff(n=lag).dt.total_microseconds().cast(pl.Float64) / 1e6
    steady = gaps.filter(gaps.rank("ordinal", descending=True) > 1)
    failed = (pl.col(f.STATUS) == f.FAILURE).fill_null(False)
    return (
        group.group_by(_ACTOR, "_ep")
        .agg(
            pl.col(f.CALLER_ID).first(),
            pl.col(f.SESSION_ID).first(),
            pl.col(f.TOOL_NAME).sort_by(_POS).unique(maintain_order=True).alias("tools"),
            pl.col(f.TIMESTAMP).min().alias("start"),
            pl.col(f.TIMESTAMP).max().alias("end"),
            pl.len().cast(pl.Int64).alias("count"),
            failed.sum().cast(pl.Int64).alias("errors"),
            gaps.median().alias("period_s"),
            (steady.std() / steady.mean()).alias("_cv"),
            pl.col(f.REQUEST_ID).sort_by(_POS).alias("request_ids"),
        )
        .filter(pl.col("count") >= threshold)
        .with_columns(
            pl.lit(kind).alias(KIND),
            pl.lit(lag).alias("_lag"),
            pl.col(_ACTOR).str.replace_all("\x1f", " ", literal=True).alias("run"),
            pl.col("tools").list.join("→").alias(f.TOOL_NAME),
            (pl.col("count").cast(pl.Float64) * 60.0 / pl.max_horizontal(seconds, pl.lit(1.0))).alias("rate"),
        )
        .with_columns(
            severity(pl.col("count"), pl.col("rate"), seconds, pl.col("errors")).alias("severity")
        )
    )


def _runs_of(cond_break: pl.Expr) -> pl.Expr:
    """An id that changes every time `cond_break` is true, per actor."""
    return cond_break.fill_null(True).cast(pl.Int64).cum_sum().over(_ACTOR)


def repeats(calls: pl.LazyFrame, *, threshold: int, window: timedelta) -> pl.LazyFrame:
    """Runs of one (tool, arguments, result) at least `threshold` long. Runs of the same call (tool and
    arguments) one after another make one episode, from the first such run to the last, with what came
    between: an agent that keeps calling after its answer turned into a refusal is one loop. A result
    that keeps changing (polling) makes no run long enough to count."""
    gap = pl.col(f.TIMESTAMP).diff().over(_ACTOR)
    far = (gap > window).fill_null(True)
    call = _joined(f.TOOL_NAME, f.ARGUMENTS_HASH)
    tagged = calls.with_columns(
        _runs_of((pl.col(_KEY) != pl.col(_KEY).shift(1).over(_ACTOR)) | far).alias("_run"),
        _runs_of((call != call.shift(1).over(_ACTOR)) | far).alias("_ep"),
    )
    tagged = tagged.with_columns((pl.len().over(_ACTOR, "_run") >= threshold).alias("_counted"))
    position = pl.col(_POS)
    counted = pl.when(pl.col("_counted")).then(position)  # null elsewhere, which min and max skip
    tagged = tagged.with_columns(
        counted.min().over(_ACTOR, "_ep").alias("_lo"), counted.max().over(_ACTOR, "_ep").alias("_hi")
    )
    members = tagged.filter((position >= pl.col("_lo")) & (position <= pl.col("_hi")))
    return _episode("repeat", members, threshold)


def near_duplicates(
    calls: pl.LazyFrame, *, threshold: int, window: timedelta, token_slack: int = 2
) -> pl.LazyFrame:
    prev = pl.col(f.RESULT_HASH).shift(1).over(_ACTOR)
    same_result = (pl.col(f.TOOL_NAME) == pl.col(f.TOOL_NAME).shift(1).over(_ACTOR)) & (
        pl.col(f.RESULT_HASH) == prev
    )
    tokens = pl.col(f.INPUT_TOKEN_COUNT).fill_null(0)
    close = (tokens - tokens.shift(1).over(_ACTOR)).abs() <= token_slack
    differs = pl.col(f.ARGUMENTS_HASH) != pl.col(f.ARGUMENTS_HASH).shift(1).over(_ACTOR)
    gap = pl.col(f.TIMESTAMP).diff().over(_ACTOR)
    # A run continues while each call has the previous one's result and a look-alike argument.
    brk = ~(same_result & close & differs) | (gap > window)
    tagged = calls.with_columns(_runs_of(brk).alias("_ep"))
    # Only runs whose arguments actually vary (identical ones are `repeat`s).
    varied = tagged.with_columns(pl.col(f.ARGUMENTS_HASH).n_unique().over(_ACTOR, "_ep").alias("_n"))
    # Different questions that all fail alike are work hitting a failure (the outage is the story), not a loop.
    return _episode("near_duplicate", varied.filter(pl.col("_n") > 1), threshold).filter(
        pl.col("errors") * 2 < pl.col("count")
    )


def cycles(
    calls: pl.LazyFrame, *, periods: Sequence[int], min_repeats: int, window: timedelta, threshold: int = 0
) -> pl.LazyFrame:
    """Periodic stretches with at least two distinct calls per period, `min_repeats` periods long and
    `threshold` calls at least; the smallest period wins."""
    found = []
    for p in periods:
        gap = pl.col(f.TIMESTAMP).diff().over(_ACTOR)
        match = (pl.col(_KEY) == pl.col(_KEY).shift(p).over(_ACTOR)) & ~(gap > window).fill_null(False)
        tagged = calls.with_columns(match.fill_null(False).alias("_m"))
        tagged = tagged.with_columns(_runs_of(~pl.col("_m")).alias("_r"))
        # A run of k matches starting at position s covers positions s-p .. s+k-1.
        spans = (
            tagged.filter(pl.col("_m"))
            .group_by(_ACTOR, "_r")
            .agg(pl.col(_POS).min().alias("_first"), pl.len().alias("_k"))
            .filter(pl.col("_k") + p >= p * min_repeats)
            .with_columns(
                (pl.col("_first") - p).alias("_lo"), (pl.col("_first") + pl.col("_k") - 1).alias("_hi")
            )
        )
        members = (
            calls.join(spans.select(_ACTOR, "_lo", "_hi", "_r"), on=_ACTOR, how="inner")
            .filter((pl.col(_POS) >= pl.col("_lo")) & (pl.col(_POS) <= pl.col("_hi")))
            .with_columns(pl.col(_KEY).n_unique().over(_ACTOR, "_r").alias("_n"))
            .filter(pl.col("_n") >= 2)
            .with_columns(pl.format("{}:{}", pl.lit(p), pl.col("_r")).alias("_ep"))
        )
        found.append(
            _episode("cycle", members, max(threshold, p * min_repeats), lag=p).with_columns(
                pl.lit(p).alias("period"), pl.col("request_ids").list.first().alias("_a")
            )
        )
    episodes = pl.concat(found, how="vertical").collect()
    keep = []
    taken: dict[str, list[tuple[object, object]]] = {}
    for row in episodes.sort("period", "start").iter_rows(named=True):
        spans_taken = taken.setdefault(row[_ACTOR], [])
        if any(not (row["end"] < s or row["start"] > e) for s, e in spans_taken):
            continue
        spans_taken.append((row["start"], row["end"]))
        keep.append(row)
    schema = episodes.schema
    return pl.DataFrame(keep, schema=schema).lazy().drop("_a")


def rate_spikes(calls: pl.LazyFrame, *, every: str, factor: float, min_calls: int) -> pl.LazyFrame:
    """Windows where an actor made at least `min_calls` calls and `factor` times its median window."""
    windows = (
        calls.with_columns(pl.col(f.TIMESTAMP).dt.truncate(every).alias("_w"))
        .group_by(_ACTOR, "_w")
        .agg(pl.len().alias("_c"))
        .with_columns(pl.col("_c").median().over(_ACTOR).alias("_median"), pl.len().over(_ACTOR).alias("_n"))
        # a usual rate needs a few windows to be known: a short log's one or two windows have none
        .filter((pl.col("_c") >= min_calls) & (pl.col("_c") >= factor * pl.col("_median")) & (pl.col("_n") >= 3))
    )
    tagged = calls.with_columns(pl.col(f.TIMESTAMP).dt.truncate(every).alias("_w")).join(
        windows.select(_ACTOR, "_w"), on=[_ACTOR, "_w"], how="semi"
    )
    return _episode("rate_spike", tagged.with_columns(pl.col("_w").alias("_ep")), min_calls)


def _classify(episodes: pl.LazyFrame, *, poll_cv: float, poll_min_period: float) -> pl.LazyFrame:
    """Repeats that mostly failed are retry storms; steady repeats and cycles are polls, of low severity."""
    kind = pl.col(KIND)
    retry = (kind == "repeat") & (pl.col("errors") * 2 >= pl.col("count"))
    # The time one repetition takes is the sum of `lag` gaps, which varies sqrt(lag) times less than
    # one gap does: scaled back, a four-step cycle paced by a model's thinking is not mistaken for steady.
    cv = pl.col("_cv").fill_nan(None).fill_null(1.0) * pl.col("_lag").cast(pl.Float64).sqrt()
    steady = (cv <= poll_cv) & (
        pl.col("period_s").fill_null(0.0) / pl.col("_lag") >= poll_min_period
    )
    poll = kind.is_in(["repeat", "cycle"]) & steady
    return episodes.with_columns(
        pl.when(retry).then(pl.lit("retry_storm")).when(poll).then(pl.lit("poll")).otherwise(kind).alias(KIND),
        pl.when(poll & ~retry).then(pl.lit("low")).otherwise(pl.col("severity")).alias("severity"),
    )


def loops(
    frame: pl.LazyFrame,
    *,
    by: Sequence[str] | None = None,
    gap: timedelta = timedelta(minutes=5),
    threshold: int = 5,
    window: timedelta = timedelta(minutes=10),
    cycle_periods: Sequence[int] = (2, 3, 4, 5, 6),
    cycle_repeats: int = 3,
    near_duplicate_threshold: int | None = None,
    spike_every: str = "1m",
    spike_factor: float = 5.0,
    spike_min_calls: int = 60,
    poll_cv: float = 0.35,
    poll_min_period: float = 0.5,
    include_polls: bool = False,
) -> pl.LazyFrame:
    """Loop episodes, one row each: the columns of `EPISODE_COLUMNS`.

    `by` is the actor whose calls are compared; by default each run of `analysis.assign_runs`
    (cut after `gap` of inactivity), `(caller_id,)` compares a caller's calls across its runs.
    Consecutive calls further apart than `window` never belong to one episode; `threshold`
    is the fewest calls of a repeat, a near-duplicate run and a cycle. `rate` is calls per
    minute over the episode, `period_s` the median seconds between repetitions.
    """
    in_time_order = by is None
    if by is None:
        frame, by = assign_runs(frame, gap=gap), (RUN_ID,)
    calls = _calls(frame, by, in_time_order=in_time_order).cache()
    periodic = pl.concat(
        [
            repeats(calls, threshold=threshold, window=window),
            cycles(
                calls, periods=cycle_periods, min_repeats=cycle_repeats, window=window, threshold=threshold
            ).drop("period"),
        ],
        how="diagonal_relaxed",
    )
    parts = [
        _classify(periodic, poll_cv=poll_cv, poll_min_period=poll_min_period),
        near_duplicates(calls, threshold=near_duplicate_threshold or threshold, window=window),
        rate_spikes(calls, every=spike_every, factor=spike_factor, min_calls=spike_min_calls),
    ]
    cols = [pl.col(c) for c in EPISODE_COLUMNS]
    ties = [
        pl.col(c) for c in ("start", KIND, f.CALLER_ID, f.SESSION_ID, f.TOOL_NAME, "end", "count")
    ] + [pl.col("request_ids").list.first()]
    found = pl.concat([p.select(cols) for p in parts], how="vertical")
    if not include_polls:
        found = found.filter(pl.col(KIND) != "poll")
    return found.sort(ties, nulls_last=True, maintain_order=True)
