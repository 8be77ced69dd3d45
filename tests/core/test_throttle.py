"""ShardThrottle: throttling that still lets records through paces a shard, it does not stall it."""

from __future__ import annotations

import random

from shardline.throttle import ShardThrottle


def _throttle() -> ShardThrottle:
    return ShardThrottle(max_records=500, base_s=0.05, max_s=5.0, rng=random.Random(7))


def test_answers_that_write_some_records_never_grow_the_backoff_past_one_base_step() -> None:
    t = _throttle()
    for i in range(50):  # 30% of records throttled at random: nearly every answer is "throttled"
        now = float(i)
        t.throttled(now, progressed=True)
        assert t.not_before - now <= t.base_s
        assert t.hard_streak == 0
    assert t.allowance == t.floor  # the allowance still comes down (AIMD)


def test_answers_that_write_nothing_back_off_exponentially_to_the_cap() -> None:
    t = _throttle()
    waits = []
    for i in range(12):
        now = float(i) * 10
        t.throttled(now)
        waits.append(t.not_before - now)
    assert waits[-1] > 1.0  # grew from 25-50 ms
    assert max(waits) <= t.max_s
    t.written()
    t.throttled(1000.0)
    assert t.not_before - 1000.0 <= t.base_s  # a written answer forgets the streak
