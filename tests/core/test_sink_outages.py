"""The sink during outages and stops (fault-injecting FakeTransport): keep records, bounded waits.

An outage is not a bad record: while the stream cannot be reached nothing is dead-lettered, and
``flush``/``close``/``stop`` return or raise within their bounds naming what was not delivered.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from shardline import DeliveryError, StreamSink, StreamUnreachableError
from shardline.faketransport import FakeTransport

FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "linger_ms": 1.0}


def keyed(start: int, n: int, keys: int) -> pa.RecordBatch:
    ids = list(range(start, start + n))
    return pa.record_batch({"k": [f"key-{i % keys}" for i in ids], "i": ids})


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_an_outage_dead_letters_nothing_and_delivery_resumes_when_the_stream_returns() -> None:
    transport = FakeTransport(shard_count=4)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        transport.down = True
        sink.write(keyed(0, 3000, keys=50))
        wait_for(lambda: sink.metrics.failed_requests >= 20)
        assert sink.metrics.dead_letters == 0
        assert sink.metrics.records == 0
        transport.down = False
        sink.flush(timeout=30)
        assert sink.metrics.dead_letters == 0
    got = sorted(orjson.loads(r.data)["i"] for r in transport.records())
    assert got == list(range(3000))


def test_close_during_an_outage_raises_within_its_timeout_naming_what_was_not_delivered() -> None:
    transport = FakeTransport(shard_count=4)
    acked: list[int] = []
    sink = StreamSink(transport, partition_key="k", backoff_base_s=0.05, backoff_max_s=5.0)
    transport.down = True
    sink.write(keyed(0, 3000, keys=50), ack=lambda: acked.append(1))
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="3,000 records not delivered") as caught:
        sink.close(timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert caught.value.undelivered == 3000
    assert acked == [] and sink.metrics.dead_letters == 0


def test_flush_with_a_timeout_raises_and_leaves_the_records_queued() -> None:
    transport = FakeTransport(shard_count=2)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        transport.down = True
        sink.write(keyed(0, 500, keys=5))
        with pytest.raises(DeliveryError, match=r"flush timed out after 0\.2 s with 500 records"):
            sink.flush(timeout=0.2)
        transport.down = False
        sink.flush(timeout=30)  # the same records, delivered once the stream is back
    assert len(transport.records()) == 500


def test_stop_stops_retries_at_once_and_says_what_is_left() -> None:
    transport = FakeTransport(shard_count=2)
    sink = StreamSink(transport, partition_key="k", backoff_base_s=1.0, backoff_max_s=30.0)
    sink.write(keyed(0, 100, keys=5))
    sink.flush(timeout=30)
    transport.down = True
    sink.write(keyed(100, 400, keys=5))
    wait_for(lambda: sink.metrics.failed_requests >= 1)  # in its 0.5-1 s backoff now
    started = time.monotonic()
    sink.stop()
    with pytest.raises(DeliveryError, match="stopped with 400 records not delivered"):
        sink.flush(timeout=30)
    assert time.monotonic() - started < 0.5
    with pytest.raises(DeliveryError, match="400 records not delivered"):
        sink.close(timeout=5)
    assert len(transport.records()) == 100 and sink.metrics.dead_letters == 0


def test_start_against_an_unreachable_stream_fails_in_seconds_with_one_line() -> None:
    transport = FakeTransport(shard_count=2, down=True)
    started = time.monotonic()
    with pytest.raises(
        StreamUnreachableError, match=r"cannot reach stream fake://test/stream .*within 0.3 s"
    ):
        StreamSink(transport, start_timeout_s=0.3, **FAST)
    assert time.monotonic() - started < 2.0


def test_a_retryable_error_on_every_record_is_retried_forever_by_default() -> None:
    """Only a record's own fault dead-letters it; a stream refusing everything for a while does not."""
    transport = FakeTransport(shard_count=1, fault_rate=1.0)
    with StreamSink(transport, data="raw", data_column="p", **FAST) as sink:
        sink.write(pa.record_batch({"p": [b"a", b"b"]}))
        wait_for(lambda: sink.metrics.retries >= 50)
        assert sink.metrics.dead_letters == 0
        transport.fault_rate = 0.0
        sink.flush(timeout=30)
    assert [r.data for r in transport.records()] == [b"a", b"b"]


def test_random_record_faults_on_one_hot_key_never_stall_the_shard() -> None:
    """80% of records refused at random (not throttled): retries go out at once, no backoff cliff.

    With the default backoff (50 ms base, 5 s cap) a backoff on every all-refused answer would
    take minutes here; the work is ~1,000 round trips to an in-memory stream.
    """
    transport = FakeTransport(shard_count=1, fault_rate=0.8, seed=4)
    started = time.monotonic()
    with StreamSink(transport, partition_key="k") as sink:
        sink.write(keyed(0, 200, keys=1))
        sink.flush(timeout=60)
    assert time.monotonic() - started < 15.0
    assert [orjson.loads(r.data)["i"] for r in transport.records()] == list(range(200))


def test_throttled_records_shrink_the_shards_requests_and_are_all_delivered() -> None:
    transport = FakeTransport(shard_count=2, throttle_rate=0.5, seed=8)
    with StreamSink(transport, partition_key="k", **FAST) as sink:
        sink.write(keyed(0, 5000, keys=2000))
        wait_for(lambda: min(sink.metrics.shard_allowance.values(), default=1000) < 1000)
        sink.flush(timeout=60)
        assert sink.metrics.dead_letters == 0
    assert sorted(orjson.loads(r.data)["i"] for r in transport.records()) == list(range(5000))


def test_dead_letters_are_on_disk_before_the_ack_that_follows_them(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    transport = FakeTransport(shard_count=2, permanent=lambda data: b'"i":3}' in data)
    on_disk_at_ack: list[int] = []
    with StreamSink(transport, partition_key="k", dead_letter=target, **FAST) as sink:
        writer = sink._sink._core.dead_letter_writer
        real_flush = writer.flush
        calls: list[int] = []

        def counting_flush() -> None:
            real_flush()
            calls.append(writer.count)

        writer.flush = counting_flush  # type: ignore[method-assign]
        sink.write(keyed(0, 10, keys=3), ack=lambda: on_disk_at_ack.append(calls[-1] if calls else 0))
        sink.flush(timeout=30)
    assert on_disk_at_ack == [1]  # the dead letter was flushed (fsync) before the batch's ack
    assert [orjson.loads(line)["row"] for line in target.read_bytes().splitlines()] == [3]


def test_an_abort_that_cancels_sends_before_they_start_still_lets_close_return() -> None:
    """abort() may cancel a send task before its first step (it then never runs): its records go
    back unacknowledged and its lanes are freed, so close() ends instead of waiting for ever."""
    import asyncio

    from shardline import AsyncStreamSink

    async def main() -> tuple[int, int]:
        transport = FakeTransport(shard_count=4)
        sink = AsyncStreamSink(transport, partition_key="k", **FAST)
        await sink.start()
        engine = sink._core.engine
        await sink.write(keyed(0, 2000, keys=50))
        engine.stop()  # as a run's first stop signal: no retries
        engine._dispatch(time.monotonic())  # requests built and their tasks created, not yet run
        assert engine._sends, "no send task was created"
        engine.abort()  # cancels them before their first step
        with pytest.raises(DeliveryError) as caught:
            await asyncio.wait_for(sink.close(timeout=None), timeout=10)
        return caught.value.undelivered, len(transport.records())

    undelivered, written = asyncio.run(main())
    assert undelivered == 2000 and written == 0
