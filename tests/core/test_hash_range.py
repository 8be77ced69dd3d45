"""Hash-range addressed streams (Kinesis-like): lanes follow the shard the stream routes a key to,
explicit shards travel as hash keys, and a split or merge mid-run keeps every key's order."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from shardline import AsyncStreamSink, ShardMap
from shardline.faketransport import HASH_KEY_SPACE, FakeHashRangeTransport
from shardline.partitioning import hash_key_of, md5_hash_keys
from shardline.transport import HashRange, StreamInfo

FAST: dict[str, Any] = {"linger_ms": 0.0, "backoff_base_s": 0.001, "backoff_max_s": 0.005}


def _map(starts: list[int]) -> ShardMap:
    ends = [*(s - 1 for s in starts[1:]), HASH_KEY_SPACE - 1]
    ranges = tuple(HashRange(f"s{i}", a, b) for i, (a, b) in enumerate(zip(starts, ends, strict=True)))
    return ShardMap.for_stream(StreamInfo(len(ranges), 24, ranges))


def test_a_key_lane_is_the_open_shard_whose_range_holds_its_md5() -> None:
    rng = random.Random(5)
    starts = [0, *sorted(rng.randrange(1, HASH_KEY_SPACE) for _ in range(6))]
    shard_map = _map(starts)
    keys = [f"key-{i}" for i in range(3_000)] + ["", "é", "a" * 256]
    expected = [max(i for i, s in enumerate(starts) if s <= hash_key_of(k)) for k in keys]
    assert shard_map.lanes_of_keys(keys).tolist() == expected
    assert shard_map.hash_range and shard_map.address(3) == str(starts[3]) and shard_map.shard_id(3) == "s3"


def test_hash_keys_sharing_their_high_half_with_a_start_are_placed_exactly() -> None:
    base = 7 << 64
    shard_map = _map([0, base, base + 101])
    halves = np.array([[7, 0], [7, 100], [7, 101], [7, 2**63], [6, 2**64 - 1], [8, 0]], np.uint64)
    assert shard_map.lanes_of_hash_keys(halves).tolist() == [1, 1, 2, 2, 0, 2]
    assert md5_hash_keys(["x"]).tolist() == [[hash_key_of("x") >> 64, hash_key_of("x") & (2**64 - 1)]]


def test_the_count_model_stays_for_numbered_shards() -> None:
    shard_map = ShardMap.for_stream(StreamInfo(4, 24))
    assert not shard_map.hash_range and shard_map.address(3) == 3
    assert shard_map.differs(StreamInfo(8, 24)) and not shard_map.differs(StreamInfo(2, 24))
    assert shard_map.knows({"0", "3"}) and not shard_map.knows({"4"})


def _keyed(start: int, n: int, keys: int) -> pa.RecordBatch:
    ids = list(range(start, start + n))
    return pa.record_batch({"k": [f"hot-{i % keys}" for i in ids], "i": ids})


def test_lanes_predict_the_shard_the_stream_routes_each_key_to() -> None:
    transport = FakeHashRangeTransport(initial_shards=4)

    async def run() -> dict[int, int]:
        async with AsyncStreamSink(transport, partition_key="k", **FAST) as sink:
            await sink.write(_keyed(0, 2_000, keys=50))
            await sink.flush(timeout=30)
            return dict(sink.metrics.shard_records)

    per_lane = asyncio.run(run())
    per_shard = {
        transport.open_shards.index(r): len(transport.stored[r.shard_id]) for r in transport.open_shards
    }
    assert per_lane == {lane: n for lane, n in per_shard.items() if n}
    assert sum(per_shard.values()) == 2_000


def test_the_column_partitioner_sends_the_chosen_shard_as_a_hash_key() -> None:
    transport = FakeHashRangeTransport(initial_shards=3)
    batch = pa.record_batch({"k": [f"k{i}" for i in range(30)], "sid": [i % 3 for i in range(30)]})

    async def run() -> None:
        async with AsyncStreamSink(transport, partition_key="k", shard_id="sid", **FAST) as sink:
            await sink.write(batch)
            await sink.flush(timeout=30)

    asyncio.run(run())
    for lane, shard in enumerate(transport.open_shards):
        got = sorted(orjson.loads(r.data)["sid"] for r in transport.stored[shard.shard_id])
        assert got == [lane] * 10


def test_a_put_landing_on_an_unknown_shard_refreshes_the_map_at_once() -> None:
    transport = FakeHashRangeTransport(initial_shards=2)

    async def run() -> int:
        async with AsyncStreamSink(transport, partition_key="k", shard_refresh_s=3600, **FAST) as sink:
            await sink.write(_keyed(0, 200, keys=40))
            await sink.flush(timeout=30)
            transport.split(transport.open_shards[0].shard_id)
            await sink.write(_keyed(200, 200, keys=40))
            await sink.flush(timeout=30)
            for _ in range(200):  # the refresh runs beside the writes: poll, with a deadline
                if sink.shard_count == 3:
                    break
                await asyncio.sleep(0.01)
            return sink.shard_count

    assert asyncio.run(run()) == 3
    assert transport.describes >= 2


def _first_occurrences(transport: FakeHashRangeTransport) -> dict[str, list[int]]:
    seen: set[int] = set()
    out: dict[str, list[int]] = defaultdict(list)
    for r in transport.records_in_read_order():
        i = orjson.loads(r.data)["i"]
        if i not in seen:
            seen.add(i)
            out[str(r.partition_key)].append(i)
    return out


async def _deliver(transport: FakeHashRangeTransport, rng: random.Random, keys: int, ordering: str) -> int:
    n = 0
    options = {**FAST, "ordering": ordering, "max_in_flight_requests": rng.choice([1, 4, 16])}
    async with AsyncStreamSink(transport, partition_key="k", **options) as sink:
        batches = rng.randint(4, 8)
        for b in range(batches):
            if b in (batches // 3, 2 * batches // 3):  # reshard mid-run, twice, while records are queued
                if rng.random() < 0.5 or len(transport.open_shards) < 2:
                    transport.split(rng.choice(transport.open_shards).shard_id)
                else:
                    i = rng.randrange(len(transport.open_shards) - 1)
                    transport.merge(transport.open_shards[i].shard_id, transport.open_shards[i + 1].shard_id)
                if rng.random() < 0.5:
                    await sink._core.engine.refresh()  # else found by the answers' shard ids
            size = rng.randint(20, 300 if keys >= 8 else 60)  # a hot key takes a round trip per record
            await sink.write(_keyed(n, size, keys))
            n += size
        await sink.flush(timeout=60)
        assert sink.metrics.dead_letters == 0
    return n


@pytest.mark.parametrize("seed", range(30))
def test_every_keys_first_occurrences_keep_write_order_across_splits_and_merges(seed: int) -> None:
    rng = random.Random(seed)
    keys = rng.choice([1, 3, 8, 40])
    transport = FakeHashRangeTransport(
        initial_shards=rng.choice([1, 2, 3]),
        fault_rate=rng.choice([0.0, 0.2, 0.4]),
        latency_jitter_s=rng.choice([0.0, 0.002]),
        report_shard_ids=rng.random() < 0.7,
        seed=seed,
    )
    n = asyncio.run(_deliver(transport, rng, keys, "strict"))
    firsts = _first_occurrences(transport)
    assert sorted(i for values in firsts.values() for i in values) == list(range(n)), "nothing missing"
    for key, values in firsts.items():
        assert values == sorted(values), f"{key} out of order (seed {seed})"


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_md5_equals_hashlib_for_keys_of_every_length(seed: int) -> None:
    """The sink routes keys by its own numpy MD5 (one block per key of <= 55 bytes, hashlib beyond):
    every length across the one-block edge, multi-byte UTF-8, NULs and empty keys agree."""
    import hashlib
    import random

    from shardline.md5many import ONE_BLOCK, md5_many

    rng = random.Random(seed)
    alphabet = "ab\x00é日🙂"
    keys = [
        "".join(rng.choice(alphabet) for _ in range(n))
        for n in list(range(0, ONE_BLOCK + 10)) + [rng.randint(0, 300) for _ in range(300)]
    ]
    encoded = [k.encode() for k in keys]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    got = md5_many(offsets, np.frombuffer(b"".join(encoded), np.uint8))
    want = [int.from_bytes(hashlib.md5(e).digest(), "big") for e in encoded]
    assert [int(hi) << 64 | int(lo) for hi, lo in got.tolist()] == want
    assert md5_hash_keys(keys).tolist() == got.tolist()


def test_records_are_told_apart_by_their_keys_md5_on_a_hash_range_map_and_xxh64_on_a_count_map() -> None:
    """The engine's per-record key hash (one record per hash per request): the low half of the
    MD5 placement already took on a hash-range map, xxh64 on a count map; the same key gets the
    same hash in every batch."""
    import xxhash
    from shardline.faketransport import FakeWire
    from shardline.records import RecordMapping, map_columns, place

    wire = FakeWire()
    keys = [f"key-{i % 7}" for i in range(40)]
    mapping = RecordMapping(data="raw", data_column="d", partition_key="k")
    hash_range = _map([0, HASH_KEY_SPACE // 3, 2 * HASH_KEY_SPACE // 3])
    for shard_map, expected in (
        (hash_range, {k: hash_key_of(k) & (2**64 - 1) for k in keys}),
        (ShardMap(3), {k: xxhash.xxh64_intdigest(k.encode()) for k in keys}),
    ):
        seen: dict[str, int] = {}
        for start in (0, 3):  # two batches: the keys come in another order in the second
            batch = pa.record_batch({"k": keys[start:] + keys[:start], "d": [b"x"] * len(keys)})
            cols = map_columns(batch, mapping, wire.limits)
            enc = place(cols, shard_map, wire=wire)
            for i in range(enc.num_records):
                key = enc.key_values[int(enc.key_index[i])]
                assert int(enc.key_hashes[i]) == expected[key]
                assert seen.setdefault(key, int(enc.key_hashes[i])) == int(enc.key_hashes[i])
        assert len(set(seen.values())) == 7
