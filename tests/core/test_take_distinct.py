"""The engine's vectorised one-record-per-key packing agrees with the plain per-record rule.

The rule (ordering "strict", the default): walk the shard's queue in order
for at most ``4 * want`` records; skip a record whose key was already taken; stop at ``want`` taken
records or at the first record that does not fit the bytes left. Taken records go to the request,
everything else stays queued in its order.
"""

from __future__ import annotations

import collections
import random
from types import SimpleNamespace

import numpy as np
import pytest
from shardline.batching import SCAN_SEGMENTS as _SCAN_SEGMENTS
from shardline.batching import BatchCreator
from shardline.lanes import Lane as _Lane
from shardline.lanes import Seg as _Seg
from shardline.throttle import ShardThrottle

Record = tuple[int, int]  # (batch number, index in the batch)


def _reference(
    queue: list[Record], keys: dict[Record, int], sizes: dict[Record, int], want: int, room: int, limit: int
) -> tuple[list[Record], list[Record], int]:
    seen: set[int] = set()
    taken: list[Record] = []
    used = 0
    for pos, rec in enumerate(queue):
        if len(taken) >= want or pos >= max(want, 1) * 4 or pos >= limit:
            break
        if keys[rec] in seen:
            continue
        if sizes[rec] > room - used:
            break
        seen.add(keys[rec])
        used += sizes[rec]
        taken.append(rec)
    chosen = set(taken)
    return taken, [r for r in queue if r not in chosen], used


def _flatten(segs: list[_Seg]) -> list[Record]:
    return [(seg.batch.number, int(i)) for seg in segs for i in seg.rows]


@pytest.mark.parametrize("seed", range(40))
def test_take_distinct_matches_the_per_record_rule(seed: int) -> None:
    rng = random.Random(seed)
    batches = []
    for number in range(rng.randint(1, 3)):
        n = rng.randint(1, 400)
        sizes = np.array([rng.randint(1, 60) for _ in range(n)], dtype=np.int64)
        enc = SimpleNamespace(
            key_hashes=np.array([rng.randrange(rng.choice([3, 20, 500])) for _ in range(n)], dtype=np.uint64),
            offsets=np.concatenate(([0], np.cumsum(sizes))).astype(np.int64),
        )
        batches.append(SimpleNamespace(number=number, enc=enc, n=n))
    # a queue of segments, some cut into small pieces like the queue of a shard under faults
    fragmented = seed % 2 == 0
    lane = _Lane(shard=0, throttle=ShardThrottle(1000, 0.05, 5.0))
    for batch in batches:
        i = 0
        while i < batch.n:
            j = min(batch.n, i + rng.choice([1, 2, 3] if fragmented else [1, 2, 3, 50, 400]))
            lane.queue.append(_Seg(batch, np.arange(i, j), attempt=rng.randint(0, 2)))
            i = j
    queue = _flatten(list(lane.queue))
    limit = sum(len(seg) for seg in list(lane.queue)[:_SCAN_SEGMENTS])
    keys = {(b.number, i): int(b.enc.key_hashes[i]) for b in batches for i in range(b.n)}
    sizes = {(b.number, i): int(b.enc.offsets[i + 1] - b.enc.offsets[i]) for b in batches for i in range(b.n)}
    want = rng.choice([1, 5, 62, 1000])
    room = rng.choice([10**9, 500, 40])
    attempts = {(seg.batch.number, int(i)): seg.attempt for seg in lane.queue for i in seg.rows}

    pieces: list[tuple[_Lane, _Seg]] = []
    taken, used = BatchCreator.take_distinct(lane, pieces, want, room)

    expect_taken, expect_left, expect_used = _reference(queue, keys, sizes, want, room, limit)
    assert _flatten([seg for _, seg in pieces]) == expect_taken
    assert _flatten(list(lane.queue)) == expect_left
    assert (taken, used) == (len(expect_taken), expect_used)
    # every piece and every queued segment keeps its records' retry state
    for seg in [seg for _, seg in pieces] + list(lane.queue):
        assert all(attempts[(seg.batch.number, int(i))] == seg.attempt for i in seg.rows)
    assert all(lane is owner for owner, _ in pieces)
    assert all(len(seg) > 0 for seg in lane.queue)
    assert isinstance(lane.queue, collections.deque)


def test_take_distinct_stops_after_the_segment_cap() -> None:
    n = 3 * _SCAN_SEGMENTS
    enc = SimpleNamespace(
        key_hashes=np.arange(n, dtype=np.uint64), offsets=np.arange(n + 1, dtype=np.int64) * 10
    )
    batch = SimpleNamespace(number=0, enc=enc)
    lane = _Lane(shard=0, throttle=ShardThrottle(1000, 0.05, 5.0))
    lane.queue.extend(_Seg(batch, np.arange(i, i + 1)) for i in range(n))  # one record per segment
    pieces: list[tuple[_Lane, _Seg]] = []
    taken, used = BatchCreator.take_distinct(lane, pieces, 1000, 10**9)
    assert (taken, used) == (_SCAN_SEGMENTS, 10 * _SCAN_SEGMENTS)
    assert _flatten([seg for _, seg in pieces]) == [(0, i) for i in range(_SCAN_SEGMENTS)]
    assert _flatten(list(lane.queue)) == [(0, i) for i in range(_SCAN_SEGMENTS, n)]
