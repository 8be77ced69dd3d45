"""Property test of the default ordering: per-key first occurrences in write order, nothing missing.

Each seed draws a failure pattern for the fault-injecting :class:`FakeTransport` (records failed
at random, as a tail or as a *head* of each shard's part — the worst case for order —, throttled
records, whole requests failed before storing, requests stored and then "reset" so the outcome is
unknown, answers coming back out of order), few hot keys, shard counts, batch sizes, in-flight
caps, and sometimes a shard growth half-way. The stream is then read back: for every key, the
first occurrence of each of its records must come in write order, and every record must be there.
This checks the stream, not the sink's counters.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pyarrow as pa
import pytest
from shardline import AsyncStreamSink
from shardline.faketransport import FakeTransport

FAST = {"backoff_base_s": 0.0005, "backoff_max_s": 0.004, "linger_ms": 0.5}


def draw(seed: int) -> tuple[dict[str, Any], dict[str, Any], list[int], int, bool]:
    """(transport faults, sink options, batch sizes, keys, grow half-way) for one seed."""
    rng = random.Random(seed)
    faults = {
        "shard_count": rng.choice([1, 2, 4]),
        "fault_rate": rng.choice([0.0, 0.1, 0.3, 0.6]),
        "fault_shape": rng.choice(["random", "tail", "head"]),
        "request_fault_rate": rng.choice([0.0, 0.0, 0.1, 0.3]),
        "unknown_rate": rng.choice([0.0, 0.1, 0.3]),
        "throttle_rate": rng.choice([0.0, 0.0, 0.1]),
        "latency_jitter_s": rng.choice([0.0, 0.0005]),
        "seed": seed,
    }
    sink = {"max_in_flight_requests": rng.choice([1, 4, 16]), **FAST}
    sizes = [rng.choice([1, 7, 50, 200]) for _ in range(rng.randint(3, 8))]
    return faults, sink, sizes, rng.choice([1, 2, 3, 5, 8]), rng.random() < 0.3


def first_occurrences(transport: FakeTransport) -> dict[str, list[int]]:
    """key -> the ``i`` of its records in stream order (per shard), each ``i`` at its first occurrence."""
    out: dict[str, list[int]] = {}
    seen: set[int] = set()
    for shard in transport.shards:
        for rec in shard:
            doc = orjson.loads(rec.data)
            if doc["i"] not in seen:
                seen.add(doc["i"])
                out.setdefault(doc["k"], []).append(doc["i"])
    return out


async def deliver(
    transport: FakeTransport, sink_options: dict[str, Any], sizes: list[int], keys: int, grow: bool
) -> int:
    n = 0
    async with AsyncStreamSink(transport, partition_key="k", **sink_options) as sink:
        for b, size in enumerate(sizes):
            if grow and b == len(sizes) // 2:
                assert transport.shard_count is not None
                transport.grow(transport.shard_count * 2)
                await sink._core.engine.refresh()
            ids = list(range(n, n + size))
            await sink.write(pa.record_batch({"k": [f"hot-{i % keys}" for i in ids], "i": ids}))
            n += size
        await sink.flush(timeout=120)
        assert sink.metrics.dead_letters == 0  # nothing here belongs to a record: never dead-lettered
    return n


@pytest.mark.parametrize("seed", range(80))
def test_default_ordering_keeps_each_keys_first_occurrences_in_order(seed: int) -> None:
    faults, sink_options, sizes, keys, grow = draw(seed)
    transport = FakeTransport(**faults)
    n = asyncio.run(deliver(transport, sink_options, sizes, keys, grow))
    firsts = first_occurrences(transport)
    assert sorted(i for values in firsts.values() for i in values) == list(range(n)), "nothing missing"
    for key, values in firsts.items():
        assert values == sorted(values), f"{key} out of order under {faults}"
    assert transport.violations == []
