"""Sinks that own shards (``owned_shards``): W writers of one source write every row exactly once.

Property tests of the placement logic over the fake transport (the Dask tests run the same over
the real server).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import orjson
import pyarrow as pa
import pytest
from shardline import ConfigError, ShardOwnership, StreamSink
from shardline.faketransport import FakeTransport

FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "linger_ms": 1.0}


def rows(n: int, keys: int, seed: int, null_every: int = 0) -> pa.RecordBatch:
    import numpy as np

    rng = np.random.default_rng(seed)
    k = [f"key-{x}" for x in rng.integers(0, keys, n)]
    if null_every:
        k = [None if i % null_every == 0 else v for i, v in enumerate(k)]
    return pa.record_batch({"k": k, "i": list(range(n))})


def write_as_slots(
    batch: pa.RecordBatch, slots: int, shard_count: int, partitioner: str = "hash"
) -> tuple[FakeTransport, list[int], list[int]]:
    transport = FakeTransport(shard_count=shard_count)
    not_owned, acked = [], []
    for slot in range(slots):
        owned = ShardOwnership.slot(slot, slots, shard_count)
        with StreamSink(
            transport, partition_key="k", partitioner=partitioner, owned_shards=owned, **FAST
        ) as sink:
            sink.write(batch, ack=lambda: acked.append(1))
            sink.flush(timeout=30)
            not_owned.append(sink.metrics.not_owned)
    return transport, not_owned, acked


@pytest.mark.parametrize(("slots", "shards", "seed"), [(2, 4, 1), (3, 8, 2), (4, 4, 3), (5, 3, 4)])
def test_every_row_is_written_by_exactly_one_slot_and_acked_by_all(
    slots: int, shards: int, seed: int
) -> None:
    batch = rows(5_000, keys=200, seed=seed, null_every=7)
    transport, not_owned, acked = write_as_slots(batch, slots, shards)
    counts = Counter(orjson.loads(r.data)["i"] for r in transport.records())
    assert set(counts) == set(range(5_000)) and max(counts.values()) == 1
    assert sum(not_owned) == (slots - 1) * 5_000  # each row dropped by every slot but its owner
    assert len(acked) == slots  # a slot acks the whole batch, dropped rows included


def test_keyless_rows_belong_to_slot_zero() -> None:
    batch = pa.record_batch({"k": [None] * 100, "i": list(range(100))})
    transport = FakeTransport(shard_count=4)
    for slot, expected in ((1, 0), (0, 100)):
        owned = ShardOwnership.slot(slot, 2, 4)
        with StreamSink(transport, partition_key="k", owned_shards=owned, **FAST) as sink:
            sink.write(batch)
            sink.flush(timeout=30)
            assert sink.metrics.records == expected


def test_ownership_is_judged_at_the_pinned_count_after_the_stream_grew() -> None:
    """A 4-shard stream grew to 8: records are placed for 8 shards, owners still chosen at 4, so
    two writers never share a key; each key still lands on one shard."""
    batch = rows(4_000, keys=300, seed=9)
    transport = FakeTransport(shard_count=8)
    writers: dict[str, set[int]] = defaultdict(set)
    seen: set[tuple[int, int]] = set()
    for slot in range(2):
        owned = ShardOwnership.slot(slot, 2, 4)
        with StreamSink(transport, partition_key="k", owned_shards=owned, **FAST) as sink:
            sink.write(batch)
            sink.flush(timeout=30)
            assert sink.shard_count == 8
        for r in transport.records():
            if (r.shard_id, r.sequence_number) not in seen:
                seen.add((r.shard_id, r.sequence_number))
                writers[str(r.partition_key)].add(slot)
    records = transport.records()
    assert sorted(orjson.loads(r.data)["i"] for r in records) == list(range(4_000))
    assert all(len(s) == 1 for s in writers.values())
    assert max(r.shard_id for r in records) >= 4  # placement did use the grown count


def test_a_partitioner_that_ignores_keys_cannot_be_split_by_shard() -> None:
    with pytest.raises(ConfigError, match=r'round-robin.*split = "files"'):
        StreamSink(
            FakeTransport(shard_count=4), owned_shards=ShardOwnership.slot(0, 2, 4), partitioner="round-robin"
        )


def test_shards_outside_the_count_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"outside 0\.\.3"):
        ShardOwnership.of([0, 4], 4)
