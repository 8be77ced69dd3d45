"""Per-shard rate control: AIMD on the records a request may carry, and capped backoff.

One :class:`ShardThrottle` per shard (ordering lane), in the manner of Flink's
``RateLimitingStrategy`` / ``AIMDScalingStrategy``: the engine asks it how many records a request
may carry for the shard (:attr:`allowance`) and when the shard may be sent to again
(:attr:`not_before`), and tells it how each response went. The rules:

- **Throttled** (a request refused as a whole with 429/503, or every record of the shard refused
  with a throttling error): halve the allowance (down to ``floor``) and back off,
  ``base * 2**(n-1)`` capped at ``max``, with jitter, growing while it goes on.
- **Throttled, with progress** (some records of the shard throttled, others written in the same
  answer): the shard is at its rate, not stuck: halve the allowance and pace the next request by one
  ``base`` step, but forget the streak. Growing the backoff here would stall a shard that writes
  most of its records (30% of records throttled at random made nearly every answer "throttled" and
  held the shard at the 5 s cap: 2,000 records took 227 s).
- **Unreachable** (connection refused or reset, timeout, other 5xx): back off the same way; the
  allowance stays (the stream did not say it was overloaded).
- **Refused but responsive** (every record of the shard failed with a plain retryable error, but
  the stream answered): retry at once. Only after ``_SOFT_AFTER`` such answers in a row wait a
  little (from 1 ms, doubling, at most ``_SOFT_MAX_S``): a record that always fails does not spin,
  and a shard failing records at random, even most of them, never stalls.
- **Written** (at least one record of the shard written, none throttled): forget the streaks and
  grow the allowance additively (a quarter, at least 10) up to ``max_records``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_SOFT_AFTER = 8
"""Answers in a row refusing every record of a shard (without throttling) before it waits at all."""
_SOFT_BASE_S = 0.001
_SOFT_MAX_S = 0.05
"""Longest wait after answers that refused every record of a shard without throttling it."""


@dataclass
class ShardThrottle:
    """AIMD allowance and backoff of one shard (see the module docstring). Times are monotonic seconds."""

    max_records: int
    base_s: float
    max_s: float
    floor: int = 10
    allowance: int = 0
    not_before: float = 0.0
    hard_streak: int = 0
    soft_streak: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.allowance <= 0:
            self.allowance = self.max_records
        self.floor = min(self.floor, self.max_records)

    def _backoff(self, streak: int, cap: float, base_s: float | None = None) -> float:
        base = min(cap, (self.base_s if base_s is None else base_s) * 2.0 ** min(streak - 1, 30))
        return float(base * self.rng.uniform(0.5, 1.0))

    def written(self) -> None:
        """Records of the shard were written and none was throttled."""
        self.hard_streak = 0
        self.soft_streak = 0
        if self.allowance < self.max_records:
            self.allowance = min(self.max_records, self.allowance + max(10, self.allowance // 4))

    def throttled(self, now: float, *, progressed: bool = False) -> None:
        """The stream said the shard is over its rate: send it less, later.

        ``progressed``: other records of the shard were written in the same answer, so the shard
        moves: pace it by one base step instead of growing the backoff.
        """
        self.allowance = max(self.floor, self.allowance // 2)
        self.soft_streak = 0
        if progressed:
            self.hard_streak = 0
            self.not_before = now + self._backoff(1, self.max_s)
            return
        self.hard_streak += 1
        self.not_before = now + self._backoff(self.hard_streak, self.max_s)

    def unreachable(self, now: float) -> None:
        """The request failed as a whole (no answer, or a 5xx): wait before trying again."""
        self.hard_streak += 1
        self.not_before = now + self._backoff(self.hard_streak, self.max_s)

    def refused(self, now: float) -> None:
        """The stream answered, but refused every record of the shard with a plain retryable error."""
        self.hard_streak = 0
        self.soft_streak += 1
        if self.soft_streak >= _SOFT_AFTER:
            streak = self.soft_streak - _SOFT_AFTER + 1
            self.not_before = now + self._backoff(streak, min(self.max_s, _SOFT_MAX_S), _SOFT_BASE_S)
