"""A dead letter says where its record came from: its row in the written batch and the writer's origin."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from shardline.faketransport import FakeTransport
from shardline.sink import StreamSink


def _batch(rows: int, oversized: int) -> pa.RecordBatch:
    payload = ["x" * 100] * rows
    payload[oversized] = "x" * (1_100_000)  # Data above the 1 MB record limit: dead-lettered
    return pa.RecordBatch.from_pydict({"id": list(range(rows)), "payload": payload})


def test_a_dead_letter_holds_its_row_in_the_written_batch_across_chunks() -> None:
    transport = FakeTransport(shard_count=2)
    asked: list[int] = []

    def origin(row: int) -> dict[str, Any]:
        asked.append(row)
        return {"file": "f.parquet", "row": row + 1000}

    # a small in-flight cap cuts the batch into chunks of about 60 rows: the bad row is in the third
    with StreamSink(transport, max_in_flight_bytes=4 * 2**20, linger_ms=1.0) as sink:
        sink.write(_batch(200, oversized=150), origin=origin)
        sink.flush()
        [dead] = sink.dead_letters
    assert dead["row"] == 150
    assert dead["origin"] == {"file": "f.parquet", "row": 1150}
    assert asked == [150]
    assert len(transport.records()) == 199


def test_without_an_origin_a_dead_letter_has_none() -> None:
    with StreamSink(FakeTransport(shard_count=2), linger_ms=1.0) as sink:
        sink.write(_batch(10, oversized=3))
        sink.flush()
        [dead] = sink.dead_letters
    assert dead["row"] == 3 and dead["origin"] is None
