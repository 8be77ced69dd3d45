"""KPL aggregation: the records of a key packed into aggregated records that the ``aws-kinesis-agg``
deaggregator reads back, byte for byte and in order, from kinesalite."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]
from shardline.transport import PutRecord
from shardline_kinesis.aggregation import MAGIC, aggregate, encode_aggregate, record_pieces, varints
from shardline_kinesis.streamtools import read_stream
from shardline_kinesis.transport import KinesisTransport
from shardline_kinesis.wire import MAX_RECORD_BYTES


def _deaggregate(data: bytes, key: str) -> list[tuple[str, bytes]]:
    record = {"Data": data, "PartitionKey": key, "SequenceNumber": "1", "ApproximateArrivalTimestamp": 0}
    out = []
    for r in iter_deaggregate_records([record], data_format="Boto3"):
        k = r["kinesis"]
        if k.get("aggregated"):
            import base64

            out.append((k["partitionKey"], base64.b64decode(k["data"])))
        else:
            out.append((k["partitionKey"], k["data"]))
    return out


def test_varints_match_protobuf() -> None:
    values = np.array([0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**28 + 5, 2**34], np.int64)
    assert varints(values).to_pylist() == [_VarintBytes(int(v)) for v in values]


def test_an_aggregate_is_read_back_by_the_kpl_deaggregator() -> None:
    data = pa.array([b"", b"\x00\xff", b"x" * 200, "é".encode()], pa.large_binary())
    blob = encode_aggregate("клю́ч".encode(), b"".join(v.as_py() for v in record_pieces(data)))
    assert blob.startswith(MAGIC) and hashlib.md5(blob[4:-16]).digest() == blob[-16:]
    assert _deaggregate(blob, "клю́ч") == [("клю́ч", v) for v in data.to_pylist()]


def test_each_keys_records_are_packed_in_order_and_ineligible_rows_left_alone() -> None:
    rows = [(f"k{i % 3}" if i % 10 else "rare", b"v%d" % i) for i in range(30)]
    rows.append(("single", b"only-one"))
    keys = sorted({k for k, _ in rows})
    key_index = np.array([keys.index(k) for k, _ in rows], np.int64)
    eligible = np.ones(len(rows), np.bool_)
    eligible[7] = False  # an invalid row (k1) stays out, as it is
    data = pa.array([v for _, v in rows], pa.large_binary())
    packed, absorbed = aggregate(data, [k.encode() for k in keys], key_index, eligible)
    kept = [int(i) for i in np.flatnonzero(~absorbed)]
    assert kept == [0, 1, 2, 3, 7, 30]  # the first row of each key's aggregate, row 7, the single record
    assert packed[7].as_py() == b"v7" and packed[30].as_py() == b"only-one"
    for row in (0, 1, 2, 3):
        key = rows[row][0]
        assert packed[row].as_py().startswith(MAGIC)
        expected = [v for i, (k, v) in enumerate(rows) if k == key and i != 7]
        assert _deaggregate(packed[row].as_py(), key) == [(key, v) for v in expected]


def test_aggregates_stay_within_the_record_limit() -> None:
    rng = random.Random(5)
    values = [rng.randbytes(rng.randint(50_000, 300_000)) for _ in range(20)]
    key = "hot-key"
    data = pa.array(values, pa.large_binary())
    packed, absorbed = aggregate(
        data, [key.encode()], np.zeros(len(values), np.int64), np.ones(len(values), np.bool_)
    )
    kept = [packed[int(i)].as_py() for i in np.flatnonzero(~absorbed)]
    assert len(kept) > 1 and all(len(b) + len(key) <= MAX_RECORD_BYTES for b in kept)
    assert [v for b in kept for _, v in _deaggregate(b, key)] == values


def test_aggregated_records_round_trip_through_kinesalite(kinesalite: Any) -> None:
    name = kinesalite.unique_name("agg")
    rows = [(f"user-{i % 4}", b"event-%d" % i) for i in range(400)]
    keys = sorted({k for k, _ in rows})
    data = pa.array([v for _, v in rows], pa.large_binary())
    key_index = np.array([keys.index(k) for k, _ in rows], np.int64)
    packed, absorbed = aggregate(data, [k.encode() for k in keys], key_index, np.ones(len(rows), np.bool_))
    sent = [PutRecord(packed[int(i)].as_py(), rows[int(i)][0]) for i in np.flatnonzero(~absorbed)]
    assert len(sent) == len(keys)

    async def main() -> None:
        t = KinesisTransport(kinesalite.stream_url(name))
        try:
            await t.create(2, 24)
            assert all(r.ok for r in await t.put_records(sent))
        finally:
            await t.close()

    asyncio.run(main())
    read = [r for _, r in read_stream(kinesalite.client(), name)]
    assert len(read) == len(keys)
    users = list(iter_deaggregate_records(read, data_format="Boto3"))
    assert all(u["kinesis"].get("aggregated") for u in users)
    import base64

    got = [(u["kinesis"]["partitionKey"], base64.b64decode(u["kinesis"]["data"])) for u in users]
    for key in keys:
        assert [v for k, v in got if k == key] == [v for k, v in rows if k == key]


@pytest.mark.parametrize("n", [0, 1])
def test_nothing_to_pack(n: int) -> None:
    data = pa.array([b"a"] * n, pa.large_binary())
    packed, absorbed = aggregate(data, [b"k"], np.zeros(n, np.int64), np.ones(n, np.bool_))
    assert packed.to_pylist() == data.to_pylist() and not absorbed.any()
