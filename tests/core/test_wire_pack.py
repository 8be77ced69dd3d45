"""A wire's optional ``pack(cols)``: the engine sends what it packed, never the absorbed rows, acks
every batch, and dead-letters only the rows that were invalid (the hook Kinesis aggregation uses)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
from shardline import StreamSink
from shardline.faketransport import FakeTransport, FakeWire
from shardline.records import MappedColumns


class JoiningWire(FakeWire):
    """Packs each key's valid rows of a chunk into its first row: Data joined with ``|`` (rows
    without a key are left alone)."""

    def pack(self, cols: MappedColumns) -> MappedColumns:
        assert cols.key_index is not None
        data = cols.data.to_pylist()
        absorbed = np.zeros(cols.num_rows, np.bool_)
        first: dict[int, int] = {}
        for row in np.flatnonzero(~cols.invalid & (cols.key_index >= 0)):
            k = int(cols.key_index[row])
            if k in first:
                data[first[k]] += b"|" + data[row]
                absorbed[row] = True
            else:
                first[k] = int(row)
        return replace(cols, data=pa.array(data, pa.large_binary()), absorbed=absorbed)


def test_packed_records_are_sent_once_and_batches_acked() -> None:
    transport = FakeTransport(shard_count=2, wire=JoiningWire(), fault_rate=0.3, seed=4)
    acks: list[int] = []
    batches = [
        pa.record_batch({"k": ["a", "b", "a", None, "b", "a"], "v": [f"{i}-{j}" for j in range(5)] + [None]})
        for i in range(3)
    ]
    with StreamSink(transport, partition_key="k", data="raw", data_column="v", backoff_base_s=0.001) as sink:
        for i, batch in enumerate(batches):
            sink.write(batch, ack=lambda i=i: acks.append(i))
        sink.flush(timeout=30)
        dead = sink.dead_letters
    assert acks == [0, 1, 2]
    stored: dict[str, list[bytes]] = {}
    for r in transport.records():
        stored.setdefault(r.partition_key or "", []).append(r.data)
    for key, rows in (("a", (0, 2)), ("b", (1, 4))):
        expected = [b"|".join(f"{i}-{j}".encode() for j in rows) for i in range(3)]
        seen: list[bytes] = []
        for d in stored[key]:  # duplicates allowed (at least once), first occurrences in order
            if d not in seen:
                seen.append(d)
        assert seen == expected
    assert sorted(set(stored[""])) == [b"0-3", b"1-3", b"2-3"]  # keyless rows: sent as they are
    assert [d["reason"] for d in dead] == ["Data is null"] * 3  # the invalid rows: dead-lettered, not packed
