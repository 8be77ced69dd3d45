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
            run = rng.choice([True, None])  # known to be a run (as span() makes them) or not yet
            lane.queue.append(_Seg(batch, np.arange(i, j), attempt=rng.randint(0, 2), run=run))
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
    _assert_runs_true([seg for _, seg in pieces] + list(lane.queue))


def _assert_runs_true(segs: list[_Seg]) -> None:
    """A segment that says its rows are a run (``Seg.run``, so its body is one buffer slice) has
    rows ``r, r + 1, ...``."""
    for seg in segs:
        rows = seg.rows.tolist()
        assert seg.run is not True or rows == list(range(rows[0], rows[0] + len(rows))), rows


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


def _generation_segment(batch: SimpleNamespace, keys: np.ndarray) -> _Seg:
    """A never-sent segment as the sink places it for ordering "strict": the batch's records
    re-ordered by generation (each key's 1st record, then each key's 2nd, ...), with their ends.
    ``batch.keys[pos]``: the key at queue position ``pos``."""
    from shardline.records import _by_generation

    n = len(keys)
    order, _, rank = _by_generation(np.arange(n), np.zeros(n, np.int64), keys)
    batch.keys = keys[order]
    batch.enc.key_hashes = batch.keys.astype(np.uint64)
    ends = np.append(np.flatnonzero(np.diff(rank)) + 1, n)
    return _Seg(batch, np.arange(n, dtype=np.int64), gens=ends, run=True)


@pytest.mark.parametrize("seed", range(60))
def test_take_distinct_over_generations_takes_only_each_keys_earliest_record(seed: int) -> None:
    """Segments with known generations (the fast path): over takes, failures put back at the front
    and writes, every taken record is the earliest unwritten record of its key, no request holds a
    key twice, a queue with records always gives some, and every record is written in the end."""
    from shardline.settling import retried_part

    rng = random.Random(seed)
    lane = _Lane(shard=0, throttle=ShardThrottle(1000, 0.05, 5.0))
    unwritten: dict[int, collections.deque[Record]] = collections.defaultdict(collections.deque)
    for number in range(rng.randint(1, 4)):
        n = rng.randint(1, 300)
        keys = np.array([rng.randrange(rng.choice([2, 5, 40, 400])) for _ in range(n)], dtype=np.int64)
        sizes = np.array([rng.randint(1, 30) for _ in range(n)], dtype=np.int64)
        batch = SimpleNamespace(
            number=number, enc=SimpleNamespace(offsets=np.concatenate(([0], np.cumsum(sizes))))
        )
        lane.queue.append(_generation_segment(batch, keys))
        for pos in range(n):  # generations keep each key's records in write order
            unwritten[int(batch.keys[pos])].append((number, pos))
    for _ in range(100_000):
        if not lane.queue:
            break
        pieces: list[tuple[_Lane, _Seg]] = []
        want = rng.choice([1, 7, 64, 500])
        taken, _used = BatchCreator.take_distinct(lane, pieces, want, rng.choice([10**9, 200]))
        assert 0 < taken <= want
        _assert_runs_true([seg for _, seg in pieces] + list(lane.queue))
        seen: set[int] = set()
        failed: list[_Seg] = []
        for _, seg in pieces:
            ok = np.array([rng.random() > 0.3 for _ in range(len(seg))], dtype=bool)
            for j, pos in enumerate(seg.rows.tolist()):
                key = int(seg.batch.keys[pos])
                assert key not in seen, "a key twice in one request"
                seen.add(key)
                assert unwritten[key][0] == (seg.batch.number, pos), "not the key's earliest unwritten record"
                if ok[j]:
                    unwritten[key].popleft()
            if (~ok).any():
                failed.append(retried_part(seg, seg.rows[~ok], 0.0, "refused"))
        lane.queue.extendleft(reversed(failed))  # as Settler.requeue does
    assert not lane.queue
    assert not any(unwritten.values())


@pytest.mark.parametrize(
    "rows", [[5, 6, 7, 8], [5, 7, 6, 8], [8, 7, 6, 5], [2, 9, 4], [3], [0, 1], [1, 0], [4, 6, 5]]
)
def test_a_segments_fragments_follow_its_rows_order(rows: list[int]) -> None:
    """A request body lists a segment's records in the order of its ``rows``, which need not
    ascend (generations re-order a queue): the settler maps the answer's entries back by that
    order, so a body in any other order would settle one record's outcome onto another."""
    import pyarrow as pa
    from shardline.lanes import record_sizes

    values = [f"<{i}:{'x' * i}>".encode() for i in range(10)]
    frags = pa.array(values, pa.large_binary())
    offsets = np.frombuffer(frags.buffers()[1], np.int64, 11)
    enc = SimpleNamespace(
        fragments=memoryview(frags.buffers()[2]),
        offsets=offsets,
        fragment_array=frags,
        data_offsets=offsets,
    )
    seg = _Seg(SimpleNamespace(enc=enc), np.array(rows, np.int64))
    assert bytes(seg.fragments()) == b"".join(values[r] for r in rows)
    assert record_sizes(offsets, seg.rows).tolist() == [len(values[r]) for r in rows]
    assert seg.data_bytes() == sum(len(values[r]) for r in rows)


def _keyed_lane(shard: int, keys: int, number: int) -> _Lane:
    """A lane holding one never-sent segment of ``keys`` distinct keys (its one generation)."""
    enc = SimpleNamespace(
        key_hashes=np.arange(keys, dtype=np.uint64) + np.uint64(number << 20),
        offsets=np.arange(keys + 1, dtype=np.int64) * 10,
    )
    batch = SimpleNamespace(number=number, enc=enc)
    lane = _Lane(shard=shard, throttle=ShardThrottle(500, 0.05, 5.0))
    lane.throttle.allowance = 500
    lane.queue.append(_Seg(batch, np.arange(keys, dtype=np.int64), gens=np.array([keys]), run=True))
    lane.pending = keys
    return lane


def test_a_lane_that_would_give_a_sliver_of_its_keys_leads_the_next_request() -> None:
    """Strict: a lane is in one request at a time, so one cut to a few records by a request's
    room would give nothing more until that request is answered. It is left for the next request;
    a lane that fits goes on filling this one."""
    from shardline.metrics import SinkMetrics

    creator = BatchCreator(
        "strict", max_records=500, max_request_bytes=10**9, body_overhead=0, metrics=SinkMetrics()
    )
    a, b, c, d = (_keyed_lane(i, n, i) for i, n in enumerate([249, 239, 250, 10]))
    first = creator.build([a, b, c, d])
    assert first is not None
    assert [(lane.shard, len(seg)) for lane, seg in first.pieces] == [(0, 249), (1, 239), (3, 10)]
    assert not c.busy and c.pending == 250
    second = creator.build([c])
    assert second is not None and second.count == 250
    # the first lane of a request is never left out, however little room there is
    small = BatchCreator(
        "strict", max_records=5, max_request_bytes=10**9, body_overhead=0, metrics=SinkMetrics()
    )
    only = small.build([_keyed_lane(0, 250, 9)])
    assert only is not None and only.count == 5


def test_a_partly_scanned_segment_of_unknown_keys_ends_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of a segment the scan did not reach may be a later segment's keys' earliest: the
    window stops there, so no later segment's record of such a key is taken (it would go first)."""
    first_keys = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.uint64)  # 9 records, key 9 last
    first = SimpleNamespace(
        number=0, enc=SimpleNamespace(key_hashes=first_keys, offsets=np.arange(10, dtype=np.int64))
    )
    second = SimpleNamespace(
        number=1,
        enc=SimpleNamespace(key_hashes=np.array([9, 10], np.uint64), offsets=np.arange(3, dtype=np.int64)),
    )
    lane = _Lane(shard=0, throttle=ShardThrottle(1000, 0.05, 5.0))
    lane.queue.append(_Seg(first, np.arange(9, dtype=np.int64)))  # unknown keys (gens None)
    lane.queue.append(_Seg(second, np.arange(2, dtype=np.int64), gens=np.array([2]), run=True))
    lane.scan_hint = 1  # the last take found one key: scan a short window (MIN_SCAN records)
    pieces: list[tuple[_Lane, _Seg]] = []
    monkeypatch.setattr("shardline.batching.MIN_SCAN", 4)  # the window ends inside the first segment
    BatchCreator.take_distinct(lane, pieces, 100, 10**9)
    taken = _flatten([seg for _, seg in pieces])
    assert (1, 0) not in taken  # key 9's record of the second segment waits for (0, 8)
    assert taken and all(number == 0 for number, _ in taken)
