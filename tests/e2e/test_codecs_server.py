"""Codecs end to end: typed and nested rows through the sink into the real embedded server, read back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from shardline import StreamSink
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = start_server(tmp_path_factory.mktemp("codecs"))
    try:
        yield running
    finally:
        running.stop()


def _batch() -> pa.RecordBatch:
    at = pa.array([1704067200 * 10**9 + 1, None], pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    event = pa.StructArray.from_arrays([at, pa.array(["click", "view"])], ["at", "kind"])
    waits = pa.array([[1500000001], []], pa.list_(pa.duration("ns")))
    tags = pa.array([[("x", 1), ("y", 2)], None], pa.map_(pa.string(), pa.int64()))
    return pa.record_batch(
        {"k": ["a", "b"], "event": event, "waits": waits, "tags": tags, "f": [3.0, float("nan")]}
    )


def _records(url: str) -> dict[str, bytes]:
    return {r.partition_key: r.data for shard in read_stream(url).values() for r in shard}


def test_nested_rows_land_as_json_with_one_encoding_per_type(server: Any, tmp_path: Path) -> None:
    url = f"{server.url}/bigdata/codec-json"
    with StreamSink(url, partition_key="k", create={"shards": 2}) as sink:
        sink.write(_batch())
        sink.flush()
    rows = {k: orjson.loads(v) for k, v in _records(url).items()}
    assert rows["a"] == {
        "k": "a",
        "event": {"at": "2024-01-01T00:00:00.000000001Z", "kind": "click"},
        "waits": [1500000001],
        "tags": {"x": 1, "y": 2},
        "f": 3.0,
    }
    assert rows["b"]["event"] == {"at": None, "kind": "view"}
    assert rows["b"]["tags"] is None and rows["b"]["f"] is None
    assert b'"f":3.0' in _records(url)["a"]


def test_arrow_records_land_as_one_row_streams(server: Any) -> None:
    url = f"{server.url}/bigdata/codec-arrow"
    batch = _batch().drop_columns(["f"])  # NaN != NaN in equals()
    with StreamSink(url, partition_key="k", data="arrow", create={"shards": 2}) as sink:
        sink.write(batch)
        sink.flush()
    for i, (key, data) in enumerate(sorted(_records(url).items())):
        table = pa.ipc.open_stream(data).read_all()
        assert key == batch.column(0)[i].as_py()
        assert table.equals(pa.Table.from_batches([batch.slice(i, 1)]))
