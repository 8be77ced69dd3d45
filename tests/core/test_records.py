"""Arrow batch -> stream records: codecs, keys, limits, placement and request fragments."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from shardline.arrowbin import b64encode_array
from shardline.errors import ConfigError, SchemaError
from shardline.faketransport import FAKE_LIMITS, FakeWire
from shardline.partitioning import modulo_shard, shard_for_key
from shardline.records import (
    MappedColumns,
    RecordMapping,
    json_codec,
    map_columns,
    place,
)

LIMITS = FAKE_LIMITS
WIRE = FakeWire()


def _map(batch: pa.RecordBatch | pa.Table, mapping: RecordMapping) -> MappedColumns:
    return map_columns(batch, mapping, LIMITS)


def _json_rows(batch: pa.RecordBatch, **mapping: object) -> list[dict[str, object]]:
    return [orjson.loads(v) for v in json_codec(batch, RecordMapping(**mapping)).to_pylist()]  # type: ignore[arg-type]


def test_b64_vectorised_matches_base64_for_every_padding() -> None:
    values = [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256)) * 5, b"\x00\xff" * 7, None]
    got = b64encode_array(pa.array(values, pa.binary())).to_pylist()
    assert got == [base64.b64encode(v or b"") for v in values]


def test_json_codec_encodes_scalars_nulls_and_escapes() -> None:
    batch = pa.record_batch(
        {
            "i": pa.array([1, None, -3], pa.int64()),
            "f": [1.5, float("nan"), None],
            "b": [True, False, None],
            "s": ['quote " and \\ back', "line\nbreak\x01", None],
            "u": ["héllo ✓", "", "x"],
        }
    )
    rows = _json_rows(batch)
    assert rows[0] == {"i": 1, "f": 1.5, "b": True, "s": 'quote " and \\ back', "u": "héllo ✓"}
    assert rows[1] == {"i": None, "f": None, "b": False, "s": "line\nbreak\x01", "u": ""}
    assert rows[2] == {"i": -3, "f": None, "b": None, "s": None, "u": "x"}


def test_json_codec_encodes_timestamps_decimals_binary_and_nested() -> None:
    batch = pa.record_batch(
        {
            "ts": pa.array([dt.datetime(2024, 5, 6, 7, 8, 9, 123456)], pa.timestamp("us", tz="UTC")),
            "naive": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5)], pa.timestamp("s")),
            "day": pa.array([dt.date(2024, 2, 29)]),
            "dec": pa.array([decimal.Decimal("12345678901234567890.12")], pa.decimal128(22, 2)),
            "bin": pa.array([b"\x00\x01\xfe"]),
            "lst": pa.array([[1, None, 3]]),
            "st": pa.array([{"a": 1, "b": "x", "t": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}]),
            "dict": pa.array(["red"]).dictionary_encode(),
        }
    )
    raw = json_codec(batch, RecordMapping()).to_pylist()[0]
    assert b'"dec":12345678901234567890.12' in raw  # exact, not a rounded float
    row = orjson.loads(raw)
    assert row["ts"] == "2024-05-06T07:08:09.123456Z"
    assert row["naive"] == "2024-01-02T03:04:05"
    assert row["day"] == "2024-02-29"
    assert base64.b64decode(row["bin"]) == b"\x00\x01\xfe"
    assert row["lst"] == [1, None, 3]
    assert row["st"] == {"a": 1, "b": "x", "t": "2024-01-01T00:00:00.000000Z"}  # as at top level
    assert row["dict"] == "red"


def test_json_codec_can_select_columns() -> None:
    batch = pa.record_batch({"a": [1], "b": [2], "c": [3]})
    assert _json_rows(batch, columns=("c", "a")) == [{"c": 3, "a": 1}]


def test_raw_codec_passes_bytes_through_and_refuses_numbers() -> None:
    batch = pa.record_batch({"payload": [b"\x00raw", b"two"], "n": [1, 2]})
    cols = _map(batch, RecordMapping(data="raw", data_column="payload"))
    assert cols.data.to_pylist() == [b"\x00raw", b"two"]
    with pytest.raises(SchemaError, match=r"'n'.*binary or string"):
        _map(batch, RecordMapping(data="raw", data_column="n"))


def test_arrow_codec_rows_read_back_with_their_schema() -> None:
    batch = pa.record_batch({"a": [1, 2], "s": ["x", "y"]})
    cols = _map(batch, RecordMapping(data="arrow"))
    second = pa.ipc.open_stream(cols.data[1].as_py()).read_all()
    assert second.schema == batch.schema
    assert second.to_pylist() == [{"a": 2, "s": "y"}]


def test_template_codec_formats_columns() -> None:
    batch = pa.record_batch({"id": [7, 8], "name": ["a", None]})
    cols = _map(batch, RecordMapping(data="template", template="{id}:{name}!"))
    assert cols.data.to_pylist() == [b"7:a!", b"8:!"]


def test_missing_column_is_a_schema_error_naming_the_columns() -> None:
    batch = pa.record_batch({"a": [1]})
    with pytest.raises(SchemaError, match=r"partition_key column 'customer'.*columns: a"):
        _map(batch, RecordMapping(partition_key="customer"))


def test_nested_key_column_is_a_schema_error() -> None:
    batch = pa.record_batch({"k": [[1, 2]]})
    with pytest.raises(SchemaError, match="scalar"):
        _map(batch, RecordMapping(partition_key="k"))


def test_unknown_partitioner_is_a_config_error() -> None:
    with pytest.raises(Exception, match="no-such"):
        RecordMapping(partition_key="k", partitioner="no-such")
    with pytest.raises(ConfigError, match="needs partition_key"):
        RecordMapping(partitioner="modulo")


def test_keys_of_any_scalar_type_become_text() -> None:
    batch = pa.record_batch({"k": pa.array([10, 20, 10], pa.int32())})
    cols = _map(batch, RecordMapping(partition_key="k"))
    assert list(cols.key_values) == ["10", "20"]
    assert cols.key_index is not None and cols.key_index.tolist() == [0, 1, 0]


def test_binary_keys_that_are_not_utf8_fail_only_their_rows() -> None:
    # Kafka keys are arbitrary bytes: one bad key must not stop the whole batch
    for keys in (
        pa.array([b"ann", b"\xff\xfe", b"bob", None], pa.binary()),
        pa.array([b"ann", b"\xff\xfe", b"bob", None], pa.binary()).dictionary_encode(),
    ):
        batch = pa.record_batch({"k": keys, "v": [b"1", b"2", b"3", b"4"]})
        cols = _map(batch, RecordMapping(partition_key="k", data="raw", data_column="v"))
        assert cols.invalid.tolist() == [False, True, False, False]
        assert cols.reasons[1] == "partition key is not UTF-8 text"


def test_rows_over_the_limits_are_marked_with_reasons() -> None:
    batch = pa.record_batch(
        {
            "payload": [
                b"x" * LIMITS.max_record_bytes,
                b"x" * (LIMITS.max_record_bytes + 1),
                b"ok",
                b"ok",
                None,
            ],
            "k": ["a", "b", "k" * 256, "k" * 257, "c"],
            "ci": [b"1" * 16, b"", b"", b"", b"2" * 17],
        }
    )
    cols = _map(batch, RecordMapping(data="raw", data_column="payload", partition_key="k", client_info="ci"))
    assert cols.invalid.tolist() == [False, True, False, True, True]
    assert "1048577 bytes" in (cols.reasons[1] or "")
    assert "PartitionKey is 257 bytes" in (cols.reasons[3] or "")
    assert cols.reasons[4] == "Data is null"


def test_placement_hash_and_modulo_agree_with_the_primitives() -> None:
    keys = [f"key-{i}" for i in range(200)]
    batch = pa.record_batch({"k": keys})
    for name, fn in (("hash", shard_for_key), ("modulo", modulo_shard)):
        enc = place(_map(batch, RecordMapping(partition_key="k", partitioner=name)), 16, name, wire=WIRE)
        placed = {enc.key_values[int(enc.key_index[i])]: int(enc.shards[i]) for i in range(enc.num_records)}  # type: ignore[index]
        assert placed == {k: fn(k, 16) for k in keys}


def test_explicit_shard_ids_out_of_range_are_dead() -> None:
    batch = pa.record_batch({"sid": [0, 3, 9, -1]})
    enc = place(_map(batch, RecordMapping(shard_id="sid", partitioner="column")), 4, "column", wire=WIRE)
    assert sorted(enc.shards.tolist()) == [0, 3]
    assert [row for row, _ in enc.dead] == [2, 3]
    assert "out of range" in enc.dead[0][1]


def test_vectorised_xxh64_equals_the_library_for_every_length() -> None:
    import os

    import xxhash
    from shardline.partitioning import xxh64_many

    values = [os.urandom(n) for n in range(0, 600)] + [b"", b"a", "é".encode()]
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int64)
    got = xxh64_many(offsets, np.frombuffer(b"".join(values), dtype=np.uint8))
    assert got.tolist() == [xxhash.xxh64_intdigest(v) for v in values]


ARROW_TYPES = {
    "ints": pa.array([1, None, 3], pa.int16()),
    "strings": pa.array(["a", None, "ccc"]),
    "large_binary": pa.array([b"x", b"", None], pa.large_binary()),
    "bools": pa.array([True, None, False]),
    "ts_ns_tz": pa.array([1, None, 3], pa.timestamp("ns", "Europe/Paris")),
    "decimal": pa.array([decimal.Decimal("1.5"), None, decimal.Decimal("-2.0")], pa.decimal128(4, 1)),
    "struct": pa.array([{"a": 1, "b": [1.5]}, None, {"a": None, "b": []}]),
    "map": pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.int64())),
    "fsl": pa.array([[1, 2], [3, 4], None], pa.list_(pa.int8(), 2)),
    "nulls": pa.array([None, None, None]),
}


if hasattr(pa, "string_view"):
    ARROW_TYPES["view"] = pa.array(["v", None, "w" * 20], pa.string_view())


def _one_row_stream(batch: pa.RecordBatch, i: int) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch.slice(i, 1))
    return bytes(sink.getvalue().to_pybytes())


def _reads_back_as_its_row(data: bytes, batch: pa.RecordBatch, i: int) -> bool:
    table = pa.ipc.open_stream(data).read_all()
    table.validate(full=True)
    return table.schema == batch.schema and table.equals(pa.Table.from_batches([batch.slice(i, 1)]))


def test_arrow_codec_records_of_flat_batches_read_back_as_their_rows() -> None:
    flat = {k: v for k, v in ARROW_TYPES.items() if k not in ("struct", "map", "fsl", "view")}
    flat["float16"] = pa.array(np.array([1.5, 0, 2], np.float16), mask=np.array([False, True, False]))
    flat["fsb"] = pa.array([b"abc", None, b"xyz"], pa.binary(3))
    batch = pa.record_batch(list(flat.values()), names=list(flat))
    for sliced in (batch, batch.slice(1)):
        cols = _map(sliced, RecordMapping(data="arrow"))
        for i in range(sliced.num_rows):
            assert _reads_back_as_its_row(cols.data[i].as_py(), sliced, i)


def test_arrow_codec_records_of_nested_batches_are_the_streams_pyarrow_writes() -> None:
    batch = pa.record_batch(list(ARROW_TYPES.values()), names=list(ARROW_TYPES))
    cols = _map(batch, RecordMapping(data="arrow"))
    for i in range(batch.num_rows):
        assert cols.data[i].as_py() == _one_row_stream(batch, i)
        assert _reads_back_as_its_row(cols.data[i].as_py(), batch, i)


def test_arrow_codec_keeps_dictionary_columns_readable() -> None:
    batch = pa.record_batch({"d": pa.array(["x", "y", "x"]).dictionary_encode(), "n": [1, 2, 3]})
    cols = _map(batch, RecordMapping(data="arrow"))
    third = pa.ipc.open_stream(cols.data[2].as_py()).read_all()
    assert third.schema == batch.schema
    assert third.to_pylist() == [{"d": "x", "n": 3}]


def test_template_codec_writes_values_as_the_json_codec_does_without_quotes() -> None:
    batch = pa.record_batch(
        {
            "f": [3.0],
            "at": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)], pa.timestamp("s", "UTC")),
            "m": pa.array([[("x", 1)]], pa.map_(pa.string(), pa.int64())),
            "s": ["plain"],
        }
    )
    cols = _map(batch, RecordMapping(data="template", template="{f}|{at}|{m}|{s}"))
    assert cols.data.to_pylist() == [b'3.0|2024-01-02T03:04:05Z|{"x":1}|plain']


KEY_TYPES: dict[str, tuple[Callable[[], pa.Array], str]] = {
    "timestamp": (lambda: pa.array([dt.datetime(2024, 1, 2)], pa.timestamp("s")), "2024-01-02 00:00:00"),
    "date": (lambda: pa.array([dt.date(2024, 1, 2)]), "2024-01-02"),
    "decimal": (lambda: pa.array([decimal.Decimal("1.50")], pa.decimal128(4, 2)), "1.50"),
    "float16": (lambda: pa.array(np.array([1.5], np.float16)), "1.5"),
    "bool": (lambda: pa.array([True]), "true"),
    "duration": (lambda: pa.array([5], pa.duration("ms")), "5"),
    "interval": (
        lambda: pa.array([(1, 2, 3)], pa.month_day_nano_interval()),
        '{"months":1,"days":2,"nanoseconds":3}',
    ),
    "uuid": (lambda: pa.array([bytes(range(16))], pa.uuid()), "00010203-0405-0607-0809-0a0b0c0d0e0f"),
    "string_view": (lambda: pa.array(["sv"], pa.string_view()), "sv"),
    "binary_view": (lambda: pa.array([b"bv"], pa.binary_view()), "bv"),
    "fixed_size_binary": (lambda: pa.array([b"fx"], pa.binary(2)), "fx"),
    "large_string": (lambda: pa.array(["ls"], pa.large_string()), "ls"),
    "run_end_encoded": (lambda: pc.run_end_encode(pa.array(["re"])), "re"),
    "dictionary of ints": (lambda: pa.array([7]).dictionary_encode(), "7"),
}


@pytest.mark.parametrize("name", list(KEY_TYPES))
def test_a_partition_key_of_any_scalar_type_becomes_text(name: str) -> None:
    make, text = KEY_TYPES[name]
    try:
        arr = make()
    except AttributeError:
        pytest.skip(f"this pyarrow has no {name} type")
    cols = _map(pa.record_batch({"k": arr}), RecordMapping(partition_key="k"))
    assert list(cols.key_values) == [text]
    assert not cols.invalid.any()


def test_an_all_null_key_column_writes_rows_without_keys() -> None:
    cols = _map(pa.record_batch({"k": pa.nulls(2), "v": [1, 2]}), RecordMapping(partition_key="k"))
    assert cols.key_index is not None and cols.key_index.tolist() == [-1, -1]
    enc = place(cols, 4, "hash", wire=WIRE)
    assert enc.num_records == 2


BYTES_TYPES = [
    pa.binary(),
    pa.large_binary(),
    pa.string(),
    pa.large_string(),
    *[getattr(pa, name)() for name in ("string_view", "binary_view") if hasattr(pa, name)],
    pa.binary(3),
]


@pytest.mark.parametrize("t", BYTES_TYPES, ids=str)
def test_raw_data_and_client_info_accept_every_binary_and_string_type(t: pa.DataType) -> None:
    text = pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view"
    values = pa.array(["abc", ""] if text else [b"abc", None if pa.types.is_fixed_size_binary(t) else b""], t)
    batch = pa.record_batch({"v": values, "ci": values})
    cols = _map(batch, RecordMapping(data="raw", data_column="v", client_info="ci"))
    assert cols.data.to_pylist()[0] == b"abc"
    assert cols.client_info is not None and cols.client_info.to_pylist()[0] == b"abc"


def test_nonfinite_floats_are_counted_for_the_sink_metrics() -> None:
    from shardline.metrics import SinkMetrics

    cols = _map(pa.record_batch({"f": [float("nan"), 2.0, float("-inf")]}), RecordMapping())
    assert cols.nonfinite_floats == 2
    assert "nonfinite_floats" in SinkMetrics().snapshot()
