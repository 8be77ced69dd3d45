"""Partition strategies and the shard map: where keys go, and where they go when the stream grows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import xxhash
from shardline import ShardMap, StreamSink
from shardline.faketransport import FakeTransport
from shardline.partitioning import (
    BUILTIN_PARTITIONERS,
    Partitioner,
    jump_hash_array,
    key_hash,
    resolve_partitioner,
    shard_for_key,
)
from shardline.plugins import registered


def test_builtin_partitioners_are_registered_through_the_hook() -> None:
    assert set(registered("partitioners")) >= {"hash", "modulo", "server", "column", "round-robin"}
    assert set(registered("codecs")) >= {"json", "raw", "arrow", "template"}


def test_a_key_moves_only_to_a_new_shard_and_at_most_once_per_growth() -> None:
    hashes = np.array([key_hash(f"k{i}") for i in range(20_000)], dtype=np.uint64)
    at4, at16 = jump_hash_array(hashes, 4), jump_hash_array(hashes, 16)
    moved = ShardMap.moved_keys(hashes, 4, 16)
    assert np.all(at16[moved] >= 4)  # only to new shards
    assert np.all(at16[~moved] == at4[~moved])
    assert 0.70 < moved.mean() < 0.80  # 12 of 16 shards are new: ~3/4 of the keys move
    assert np.bincount(at16).min() > 20_000 / 16 * 0.9  # and they spread evenly


def test_shard_map_only_grows() -> None:
    shard_map = ShardMap(4)
    assert not shard_map.grow(4) and not shard_map.grow(2)
    assert shard_map.grow(8) and shard_map.shard_count == 8 and shard_map.generation == 1
    assert shard_map.shards_of(np.array([key_hash("a")], np.uint64))[0] == shard_for_key("a", 8)


def test_each_distinct_key_is_placed_once_per_batch() -> None:
    seen: list[int] = []

    def per_key(keys: Sequence[str], hashes: np.ndarray, shards: int) -> np.ndarray:
        seen.append(len(keys))
        return np.array([len(k) % shards for k in keys], dtype=np.int64)

    BUILTIN_PARTITIONERS["by-length"] = Partitioner("by-length", per_key)
    try:
        transport = FakeTransport(shard_count=4)
        with StreamSink(transport, partition_key="k", partitioner="by-length") as sink:
            sink.write(pa.record_batch({"k": ["a", "bb", "a", "ccc", "bb", "a"] * 100}))
        assert seen == [3]  # 600 rows, 3 distinct keys, one call
        assert {r.partition_key: r.shard_id for r in transport.records()} == {"a": 1, "bb": 2, "ccc": 3}
    finally:
        del BUILTIN_PARTITIONERS["by-length"]


def test_modulo_places_like_storey() -> None:
    transport = FakeTransport(shard_count=16)
    keys = [f"user-{i}" for i in range(300)]
    with StreamSink(transport, partition_key="k", partitioner="modulo") as sink:
        sink.write(pa.record_batch({"k": keys}))
    assert {r.partition_key: r.shard_id for r in transport.records()} == {
        k: xxhash.xxh32_intdigest(k.encode()) % 16 for k in keys
    }


def test_server_partitioner_lets_the_server_place_keys() -> None:
    transport = FakeTransport(shard_count=8)  # places by shard_for_key, as the embedded server does
    with StreamSink(transport, partition_key="k", partitioner="server") as sink:
        sink.write(pa.record_batch({"k": [f"k{i}" for i in range(100)]}))
    assert all(r.shard_id == shard_for_key(r.partition_key or "", 8) for r in transport.records())
    assert resolve_partitioner("server").sends_shard_id is False
