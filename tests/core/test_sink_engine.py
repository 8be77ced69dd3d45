"""The sink engine against the fault-injecting in-memory transport: ordering, retries, limits, acks."""

from __future__ import annotations

import asyncio
import collections
import threading
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline import AsyncStreamSink, StreamSink
from shardline.errors import DeliveryError, SchemaError, StreamNotFoundError
from shardline.faketransport import FAKE_LIMITS as LIMITS
from shardline.faketransport import FakeTransport
from shardline.transport import PutBodyResult

FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "linger_ms": 1.0}


def keyed(start: int, n: int, keys: int) -> pa.RecordBatch:
    """Rows ``start..start+n`` with ``keys`` hot keys and a per-key position."""
    ids = list(range(start, start + n))
    return pa.record_batch({"k": [f"key-{i % keys}" for i in ids], "i": ids})


def per_key(transport: FakeTransport) -> dict[str, list[int]]:
    """Each key's ``i`` values in stream order (shard by shard, by sequence number)."""
    out: dict[str, list[int]] = collections.defaultdict(list)
    for rec in transport.records():
        doc = orjson.loads(rec.data)
        out[doc["k"]].append(doc["i"])
    return out


def first_occurrences(transport: FakeTransport) -> dict[str, list[int]]:
    """Each key's ``i`` values in stream order, duplicates after the first occurrence dropped."""
    out: dict[str, list[int]] = {}
    for key, values in per_key(transport).items():
        seen: set[int] = set()
        out[key] = [v for v in values if not (v in seen or seen.add(v))]  # type: ignore[func-returns-value]
    return out


def assert_all_in_order(transport: FakeTransport, n: int) -> None:
    seen = per_key(transport)
    everything = sorted(i for values in seen.values() for i in values)
    assert everything == list(range(n)), "every record lands exactly once"
    for key, values in seen.items():
        assert values == sorted(values), f"key {key} out of order"


@pytest.mark.parametrize("shape", ["random", "tail", "head"])
@pytest.mark.parametrize("ordering", ["strict", "paranoid"])
def test_hot_keys_keep_their_order_under_record_faults(shape: str, ordering: str) -> None:
    transport = FakeTransport(shard_count=4, fault_rate=0.3, fault_shape=shape, seed=7)
    with StreamSink(transport, partition_key="k", ordering=ordering, **FAST) as sink:
        for b in range(6):
            sink.write(keyed(b * 500, 500, keys=6))
        sink.flush()
        assert sink.metrics.retries > 0
        assert sink.metrics.order_violations == 0
    assert_all_in_order(transport, 3000)
    assert transport.violations == []


def test_ordering_none_packs_many_records_of_a_key_per_request() -> None:
    transport = FakeTransport(shard_count=2)
    with StreamSink(transport, partition_key="k", ordering="none", **FAST) as sink:
        for b in range(10):
            sink.write(keyed(b * 1000, 1000, keys=3))
    assert max(transport.request_sizes) > 100
    assert_all_in_order(transport, 10_000)


@pytest.mark.parametrize("ordering", ["strict", "paranoid"])
def test_strict_never_puts_a_key_twice_in_a_request(ordering: str) -> None:
    transport = FakeTransport(shard_count=2)
    with StreamSink(transport, partition_key="k", ordering=ordering, **FAST) as sink:
        sink.write(keyed(0, 600, keys=3))
    assert max(transport.request_sizes) <= 3
    assert_all_in_order(transport, 600)


def test_ordering_none_keeps_order_without_failures_when_answers_come_back_out_of_order() -> None:
    """One request per shard in flight in every mode: jittered latency must not reorder a key."""
    transport = FakeTransport(shard_count=4, latency_s=0.001, latency_jitter_s=0.01, seed=3)
    with StreamSink(transport, partition_key="k", ordering="none", linger_ms=0.0) as sink:
        for b in range(20):
            sink.write(keyed(b * 1000, 1000, keys=4))
        sink.flush()
        assert sink.metrics.retries == 0
    assert_all_in_order(transport, 20_000)


def test_ordering_none_counts_the_keys_whose_order_the_stream_broke() -> None:
    transport = FakeTransport(shard_count=1, fault_rate=0.3, fault_shape="head", seed=5)
    with StreamSink(transport, partition_key="k", ordering="none", **FAST) as sink:
        sink.write(keyed(0, 2000, keys=2))
        sink.flush()
        assert sink.metrics.order_violations > 0  # counted, not hidden
    firsts = first_occurrences(transport)
    assert any(v != sorted(v) for v in firsts.values())  # and really broken in the stream
    assert sorted(i for v in firsts.values() for i in v) == list(range(2000))


def test_only_failed_records_are_retried() -> None:
    transport = FakeTransport(shard_count=4, fault_rate=0.2, seed=3)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        sink.write(keyed(0, 2000, keys=500))
        sink.flush()
        sent = sum(transport.request_sizes)
        assert sent == 2000 + sink.metrics.retries
        assert sink.metrics.records == 2000
    assert_all_in_order(transport, 2000)


def test_whole_request_failures_are_retried() -> None:
    transport = FakeTransport(shard_count=4, request_fault_rate=0.4, seed=5)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        for b in range(4):
            sink.write(keyed(b * 500, 500, keys=50))
        sink.flush()
        assert sink.metrics.failed_requests > 0
    assert_all_in_order(transport, 2000)


def test_acks_come_in_write_order_after_every_record_is_written() -> None:
    transport = FakeTransport(shard_count=8, fault_rate=0.2, seed=11)
    acked: list[tuple[int, int]] = []
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        for b in range(20):
            sink.write(
                keyed(b * 100, 100, keys=30), ack=lambda b=b: acked.append((b, len(transport.records())))
            )
        sink.flush()
    assert [b for b, _ in acked] == list(range(20))
    for b, stored in acked:
        assert stored >= (b + 1) * 100  # its records (and all before) were stored when acked


def test_every_request_respects_the_protocol_limits() -> None:
    big = b"x" * (700 * 1024)
    batch = pa.record_batch({"payload": [big] * 40 + [b"s"] * 3000, "k": [f"k{i}" for i in range(3040)]})
    transport = FakeTransport(shard_count=1)
    with StreamSink(transport, data="raw", data_column="payload", partition_key="k", **FAST) as sink:
        sink.write(batch)
    assert transport.violations == []
    assert max(transport.request_sizes) <= LIMITS.max_records_per_request
    assert LIMITS.max_request_bytes * 0.8 < transport.max_body_bytes <= LIMITS.max_request_bytes
    assert len(transport.records()) == 3040


def test_permanent_failures_go_to_a_jsonl_dead_letter_file(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    transport = FakeTransport(shard_count=2, permanent=lambda data: data.endswith((b'"i":13}', b'"i":14}')))
    with StreamSink(transport, partition_key="k", dead_letter=target, **FAST) as sink:
        sink.write(keyed(0, 50, keys=5))
        sink.flush()
        assert sink.metrics.dead_letters == 2
    lines = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    assert sorted(orjson.loads(d["data"])["i"] for d in lines) == [13, 14]
    assert {d["reason"] for d in lines} == {"rejected by the stream"}
    assert all("InvalidRecord" in d["error"] and d["time"] and d["partition_key"] for d in lines)
    assert len(transport.records()) == 48


def test_invalid_records_go_to_a_parquet_dead_letter_file_and_the_batch_is_acked(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    batch = pa.record_batch({"payload": [b"ok", b"\xff" * (LIMITS.max_record_bytes + 1)], "k": ["a", "b"]})
    acked = threading.Event()
    transport = FakeTransport(shard_count=2)
    with StreamSink(
        transport, data="raw", data_column="payload", partition_key="k", dead_letter=target
    ) as sink:
        sink.write(batch, ack=acked.set)
        sink.flush()
        assert acked.is_set()
    rows = pq.read_table(target).to_pylist()
    assert len(rows) == 1
    assert rows[0]["data_encoding"] == "base64" and rows[0]["partition_key"] == "b"
    assert "1048577 bytes" in rows[0]["reason"]
    assert [r.data for r in transport.records()] == [b"ok"]


def test_without_a_target_dead_letters_are_kept_in_memory() -> None:
    transport = FakeTransport(shard_count=1, permanent=lambda data: data == b"bad")
    with StreamSink(transport, data="raw", data_column="p") as sink:
        sink.write(pa.record_batch({"p": [b"good", b"bad"]}))
        sink.flush()
        assert sink.metrics.dead_letters == 1
        assert sink.dead_letters[0]["data"] == "bad"


def test_retry_deadline_sends_records_to_the_dead_letter() -> None:
    transport = FakeTransport(shard_count=1, fault_rate=1.0)
    with StreamSink(transport, data="raw", data_column="p", retry_deadline_s=0.2, **FAST) as sink:
        sink.write(pa.record_batch({"p": [b"a", b"b"]}))
        sink.flush(timeout=60)
        assert sink.metrics.dead_letters == 2
        assert "retry deadline" in sink.dead_letters[0]["reason"]


def test_schema_errors_come_before_anything_is_sent() -> None:
    transport = FakeTransport(shard_count=1)
    with StreamSink(transport, partition_key="missing") as sink, pytest.raises(SchemaError, match="missing"):
        sink.write(pa.record_batch({"a": [1]}))
    assert transport.requests == 0


def test_missing_stream_is_reported_or_created() -> None:
    with pytest.raises(StreamNotFoundError, match=r"does not exist.*create="):
        StreamSink(FakeTransport(shard_count=None))
    transport = FakeTransport(shard_count=None)
    with StreamSink(transport, create={"shards": 3, "retention_hours": 2}) as sink:
        sink.write(pa.record_batch({"a": [1, 2, 3]}))
    assert transport.shard_count == 3 and transport.retention_hours == 2
    assert len(transport.records()) == 3


def test_write_blocks_while_the_byte_cap_is_reached() -> None:
    """Encoded records and the request bodies built from them stay together under the cap."""
    cap = 200_000
    seen: list[tuple[int, int, int]] = []  # (buffered, request bytes, this body) inside each request

    class Watched(FakeTransport):
        async def put_records_body(self, body: bytes, record_count: int) -> PutBodyResult:
            m = sink.metrics
            seen.append((m.buffered_bytes, m.request_bytes, len(body)))
            return await super().put_records_body(body, record_count)

    transport = Watched(shard_count=2, latency_s=0.01)
    with StreamSink(transport, partition_key="k", max_in_flight_bytes=cap, **FAST) as sink:
        for b in range(30):
            sink.write(keyed(b * 1000, 1000, keys=100))
    assert len(transport.records()) == 30_000
    assert seen and max(buffered + requests for buffered, requests, _ in seen) <= cap
    assert all(requests >= body for _, requests, body in seen)  # a body in flight is counted
    assert max(buffered for buffered, _, _ in seen) > cap // 4  # the cap is used, not starved
    assert sink.metrics.request_bytes == 0


def test_transport_without_the_body_path_gets_put_records() -> None:
    transport = FakeTransport(shard_count=3, body_path=False, fault_rate=0.2, seed=2)
    with StreamSink(transport, partition_key="k", client_info="ci", **FAST) as sink:
        batch = keyed(0, 300, keys=7).append_column("ci", pa.array([b"c%d" % i for i in range(300)]))
        sink.write(batch)
    assert_all_in_order(transport, 300)
    assert {r.client_info for r in transport.records()} == {b"c%d" % i for i in range(300)}


def test_growth_keeps_per_key_order_and_moves_a_key_at_most_once() -> None:
    transport = FakeTransport(shard_count=4)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        for b in range(10):
            if b == 5:
                transport.grow(16)
                asyncio.run_coroutine_threadsafe(sink._sink._core.engine.refresh(), sink._loop).result()
            sink.write(keyed(b * 1000, 1000, keys=200))
        assert sink.shard_count == 16
        assert sink.metrics.shard_growths == 1
    assert_all_in_order(transport, 10_000)
    shards_of: dict[str, set[int]] = collections.defaultdict(set)
    for rec in transport.records():
        shards_of[rec.partition_key or ""].add(rec.shard_id)
    assert max(len(s) for s in shards_of.values()) == 2
    assert all(min(s) < 4 and (len(s) == 1 or max(s) >= 4) for s in shards_of.values())


def test_ordering_none_delivers_everything() -> None:
    transport = FakeTransport(shard_count=2, fault_rate=0.2, seed=9)
    with StreamSink(transport, partition_key="k", ordering="none", **FAST) as sink:
        sink.write(keyed(0, 2000, keys=10))
    assert sorted(i for v in per_key(transport).values() for i in v) == list(range(2000))


def test_async_sink_writes_and_acks() -> None:
    async def main() -> tuple[list[int], FakeTransport]:
        transport = FakeTransport(shard_count=4, fault_rate=0.1, seed=4)
        acked: list[int] = []
        async with AsyncStreamSink(transport, partition_key="k", **FAST) as sink:
            for b in range(5):
                await sink.write(keyed(b * 200, 200, keys=8), ack=lambda b=b: acked.append(b))
            await sink.flush()
        return acked, transport

    acked, transport = asyncio.run(main())
    assert acked == [0, 1, 2, 3, 4]
    assert_all_in_order(transport, 1000)


def test_round_robin_without_key_and_explicit_shard_ids() -> None:
    transport = FakeTransport(shard_count=4)
    with StreamSink(transport) as sink:
        sink.write(pa.record_batch({"v": list(range(400))}))
    assert [len(s) for s in transport.shards] == [100, 100, 100, 100]
    transport = FakeTransport(shard_count=4)
    with StreamSink(transport, shard_id="sid", partitioner="column") as sink:
        sink.write(pa.record_batch({"sid": [3, 3, 1]}))
    assert [len(s) for s in transport.shards] == [0, 1, 0, 2]


def test_observer_hooks_see_acks_retries_and_dead_letters(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    for module in ("shardline.engine", "shardline.settling"):  # the engine and its settler report
        monkeypatch.setattr(f"{module}.call_observers", lambda name, **kw: calls.append((name, kw)))
    transport = FakeTransport(shard_count=1, fault_rate=0.5, seed=1, permanent=lambda d: d == b"bad")
    with StreamSink(transport, data="raw", data_column="p", **FAST) as sink:
        sink.write(pa.record_batch({"p": [b"a", b"bad", b"c", b"d"]}))
    names = collections.Counter(name for name, _ in calls)
    assert names["shardline_on_batch_acked"] == 1
    assert names["shardline_on_dead_letter"] == 1
    assert names["shardline_on_retry"] >= 1


def test_a_stream_deleted_mid_write_fails_loudly_and_acks_nothing_unwritten() -> None:
    transport = FakeTransport(shard_count=2)
    acked: list[int] = []
    sink = StreamSink(transport, partition_key="k", **FAST)
    sink.write(keyed(0, 100, keys=10), ack=lambda: acked.append(0))
    sink.flush()
    transport.shard_count = None  # the stream is gone: puts answer StreamNotFound
    sink.write(keyed(100, 100, keys=10), ack=lambda: acked.append(1))
    with pytest.raises(DeliveryError, match="not found"):
        sink.flush(timeout=60)
    with pytest.raises(DeliveryError, match="100 records not written"):
        sink.close()
    assert acked == [0]


def test_many_keys_under_random_record_faults_need_few_requests() -> None:
    """30% of records failing at random must not shrink requests to a run of distinct keys.

    Counted, not timed: 20,000 records of 1,000 keys on 8 shards fit in 20 full requests; with
    retries (a retry goes out at the head of its shard's next request, with new records after it)
    a few dozen more are fine. Cutting requests at the first repeated key, shrinking them on
    scattered errors or backing off a working shard took well over a thousand.
    """
    import random

    rng = random.Random(11)
    n, keys = 20_000, 1_000
    transport = FakeTransport(shard_count=8, fault_rate=0.3, fault_shape="random", seed=3)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        for b in range(0, n, 5_000):
            ids = list(range(b, b + 5_000))
            sink.write(pa.record_batch({"k": [f"key-{rng.randrange(keys)}" for _ in ids], "i": ids}))
        sink.flush()
        assert sink.metrics.retries > n // 5
        assert sink.metrics.order_violations == 0
        assert min(sink.metrics.shard_allowance.values()) >= LIMITS.max_records_per_request // 2
    assert transport.requests < 400, f"{transport.requests} requests for {n} records"
    assert_all_in_order(transport, n)
    assert transport.violations == []


def test_strict_requests_take_each_keys_earliest_record_and_skip_repeats() -> None:
    """A hot key on every other row must not cut a request at its second record."""
    keys = ["hot" if i % 2 == 0 else f"u{i}" for i in range(300)]
    transport = FakeTransport(shard_count=1)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        sink.write(pa.record_batch({"k": keys, "i": list(range(300))}))
        sink.flush()
    assert transport.request_sizes[0] == 151  # the first "hot" and all 150 other keys
    assert max(transport.request_sizes[1:]) == 1  # then the 149 other "hot" records, one at a time
    assert_all_in_order(transport, 300)
