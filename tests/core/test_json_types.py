"""The json codec's encoding of every Arrow type: one encoding per type, wherever the value sits."""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from shardline.faketransport import FAKE_LIMITS
from shardline.jsontext import json_values
from shardline.records import RecordMapping, json_codec, map_columns

UTC = dt.UTC
PARIS_NOON = dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)  # 13:00 in Paris

# (array of two values, the second null, and the JSON text of the first value)
_ALL: list[tuple[str, Callable[[], pa.Array], bytes]] = [
    ("int8", lambda: pa.array([-8, None], pa.int8()), b"-8"),
    ("uint64", lambda: pa.array([2**64 - 1, None], pa.uint64()), b"18446744073709551615"),
    ("float64", lambda: pa.array([3.0, None]), b"3.0"),
    ("float32", lambda: pa.array([0.1, None], pa.float32()), b"0.1"),
    ("float16", lambda: pa.array(np.array([1.5, 0], np.float16), mask=np.array([False, True])), b"1.5"),
    ("decimal128", lambda: pa.array([decimal.Decimal("12.50"), None], pa.decimal128(6, 2)), b"12.50"),
    ("decimal256", lambda: pa.array([decimal.Decimal("-1.5"), None], pa.decimal256(40, 1)), b"-1.5"),
    ("bool", lambda: pa.array([True, None]), b"true"),
    ("string", lambda: pa.array(['a "q"', None]), b'"a \\"q\\""'),
    ("large_string", lambda: pa.array(["é", None], pa.large_string()), '"é"'.encode()),
    ("string_view", lambda: pa.array(["v", None], pa.string_view()), b'"v"'),
    ("binary", lambda: pa.array([b"\x00\xff", None]), b'"AP8="'),
    ("large_binary", lambda: pa.array([b"ab", None], pa.large_binary()), b'"YWI="'),
    ("binary_view", lambda: pa.array([b"ab", None], pa.binary_view()), b'"YWI="'),
    ("fixed_size_binary", lambda: pa.array([b"ab", None], pa.binary(2)), b'"YWI="'),
    ("date32", lambda: pa.array([dt.date(2024, 2, 29), None]), b'"2024-02-29"'),
    ("date64", lambda: pa.array([dt.date(2024, 2, 29), None], pa.date64()), b'"2024-02-29"'),
    ("time32[s]", lambda: pa.array([dt.time(1, 2, 3), None], pa.time32("s")), b'"01:02:03"'),
    ("time64[ns]", lambda: pa.array([dt.time(1, 2, 3, 4), None], pa.time64("ns")), b'"01:02:03.000004000"'),
    (
        "timestamp[s]",
        lambda: pa.array([dt.datetime(2024, 1, 2, 3, 4, 5), None], pa.timestamp("s")),
        b'"2024-01-02T03:04:05"',
    ),
    (
        "timestamp[ms]",
        lambda: pa.array([dt.datetime(2024, 1, 2), None], pa.timestamp("ms")),
        b'"2024-01-02T00:00:00.000"',
    ),
    (
        "timestamp[us, UTC]",
        lambda: pa.array([PARIS_NOON, None], pa.timestamp("us", "UTC")),
        b'"2024-01-01T12:00:00.000000Z"',
    ),
    (
        "timestamp[ns, Paris]",
        lambda: pa.array([PARIS_NOON, None], pa.timestamp("ns", "Europe/Paris")),
        b'"2024-01-01T12:00:00.000000000Z"',
    ),
    ("duration[ns]", lambda: pa.array([1500000001, None], pa.duration("ns")), b"1500000001"),
    ("duration[s]", lambda: pa.array([90, None], pa.duration("s")), b"90"),
    (
        "month_day_nano_interval",
        lambda: pa.array([(1, 2, 3), None], pa.month_day_nano_interval()),
        b'{"months":1,"days":2,"nanoseconds":3}',
    ),
    (
        "uuid",
        lambda: pa.array([bytes(range(16)), None], pa.uuid()),
        b'"00010203-0405-0607-0809-0a0b0c0d0e0f"',
    ),
    ("json extension", lambda: pa.array(['{"a":1}', None], pa.json_()), b'"{\\"a\\":1}"'),
    ("dictionary", lambda: pa.array(["red", None]).dictionary_encode(), b'"red"'),
    ("run_end_encoded", lambda: pc.run_end_encode(pa.array([7, None])), b"7"),
    ("struct", lambda: pa.array([{"a": 1, "b": "x"}, None]), b'{"a":1,"b":"x"}'),
    ("list", lambda: pa.array([[1, None], None]), b"[1,null]"),
    ("large_list", lambda: pa.array([[1.0], None], pa.large_list(pa.float64())), b"[1.0]"),
    ("fixed_size_list", lambda: pa.array([[1, 2], None], pa.list_(pa.int64(), 2)), b"[1,2]"),
    ("list_view", lambda: pa.array([[1, 2], None], pa.list_view(pa.int64())), b"[1,2]"),
    (
        "map<string,int64>",
        lambda: pa.array([[("x", 1), ("y", 2)], None], pa.map_(pa.string(), pa.int64())),
        b'{"x":1,"y":2}',
    ),
    ("null", lambda: pa.array([None, None]), b"null"),
]


def _available() -> list[tuple[str, pa.Array, bytes]]:
    """The cases this pyarrow can build (views came in 16, uuid in 18, json in 19)."""
    out = []
    for name, make, text in _ALL:
        try:
            out.append((name, make(), text))
        except (AttributeError, NotImplementedError, pa.ArrowException):
            continue
    return out


TYPES = _available()


def _row(values: pa.Array, i: int = 0) -> bytes:
    text: bytes = json_values(values).to_pylist()[i]
    return text


@pytest.mark.parametrize(("name", "arr", "text"), TYPES, ids=[t[0] for t in TYPES])
def test_each_type_has_one_encoding_at_top_level_and_in_every_container(
    name: str, arr: pa.Array, text: bytes
) -> None:
    assert _row(arr) == text
    assert _row(arr, 1) == b"null"
    one = arr.slice(0, 1)
    containers = {
        "struct": (pa.StructArray.from_arrays([one], ["v"]), b'{"v":' + text + b"}"),
        "list": (pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), one), b"[" + text + b"]"),
        "large_list": (pa.LargeListArray.from_arrays(pa.array([0, 1], pa.int64()), one), b"[" + text + b"]"),
        "fixed_size_list": (pa.FixedSizeListArray.from_arrays(one, 1), b"[" + text + b"]"),
        "map value": (
            pa.MapArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array(["k"]), one),
            b'{"k":' + text + b"}",
        ),
        "list of struct": (
            pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), pa.StructArray.from_arrays([one], ["v"])),
            b'[{"v":' + text + b"}]",
        ),
    }
    for where, (nested, expected) in containers.items():
        assert _row(nested) == expected, where


def test_duration_in_a_list_is_the_same_integer_as_at_top_level() -> None:
    batch = pa.record_batch(
        {
            "d": pa.array([1500000001], pa.duration("ns")),
            "ds": pa.array([[1500000001]], pa.list_(pa.duration("ns"))),
        }
    )
    assert orjson.loads(json_codec(batch, RecordMapping()).to_pylist()[0]) == {
        "d": 1500000001,
        "ds": [1500000001],
    }


def test_tz_timestamps_are_utc_with_z_at_top_level_and_nested() -> None:
    paris = pa.timestamp("us", "Europe/Paris")
    batch = pa.record_batch(
        {
            "at": pa.array([PARIS_NOON], paris),
            "ev": pa.array([{"at": PARIS_NOON}], pa.struct([("at", paris)])),
            "ats": pa.array([[PARIS_NOON]], pa.list_(paris)),
        }
    )
    row = orjson.loads(json_codec(batch, RecordMapping()).to_pylist()[0])
    z = "2024-01-01T12:00:00.000000Z"
    assert row == {"at": z, "ev": {"at": z}, "ats": [z]}


def test_map_with_string_keys_is_a_json_object() -> None:
    batch = pa.record_batch(
        {"m": pa.array([[("x", 1), ("y", 2)], [], None], pa.map_(pa.string(), pa.int64()))}
    )
    assert json_codec(batch, RecordMapping()).to_pylist() == [
        b'{"m":{"x":1,"y":2}}',
        b'{"m":{}}',
        b'{"m":null}',
    ]


def test_map_with_non_string_keys_uses_each_keys_json_text_as_the_name() -> None:
    m = pa.array([[(1, "a"), (2, "b")]], pa.map_(pa.int64(), pa.string()))
    b = pa.array([[(True, 1.5)]], pa.map_(pa.bool_(), pa.float64()))
    assert _row(m) == b'{"1":"a","2":"b"}'
    assert _row(b) == b'{"true":1.5}'


def test_floats_stay_floats() -> None:
    batch = pa.record_batch({"f": [3.0, -0.0, 1e20, 2.5, 100.0]})
    rows = [orjson.loads(v) for v in json_codec(batch, RecordMapping()).to_pylist()]
    assert [type(r["f"]) for r in rows] == [float] * 5
    assert json_codec(batch, RecordMapping()).to_pylist()[0] == b'{"f":3.0}'


def test_nonfinite_floats_become_null_and_are_counted_at_any_depth() -> None:
    batch = pa.record_batch(
        {
            "f": [float("nan"), 1.0, float("inf")],
            "l": pa.array([[float("-inf"), 2.0], None, []]),
            "m": pa.array([[("a", float("nan"))], [], []], pa.map_(pa.string(), pa.float32())),
            "d": pa.array([float("nan"), float("nan"), 1.0]).dictionary_encode(),
        }
    )
    cols = map_columns(batch, RecordMapping(), FAKE_LIMITS)
    assert orjson.loads(cols.data[0].as_py()) == {"f": None, "l": [None, 2.0], "m": {"a": None}, "d": None}
    assert cols.nonfinite_floats == 6


def test_null_rows_of_a_struct_hide_their_fields_nan() -> None:
    st = pa.StructArray.from_arrays([pa.array([float("nan")])], ["x"], mask=pa.array([True]))
    cols = map_columns(pa.record_batch({"s": st}), RecordMapping(), FAKE_LIMITS)
    assert cols.data.to_pylist() == [b'{"s":null}']
    assert cols.nonfinite_floats == 0


def test_sliced_and_null_backed_lists_encode_only_their_own_values() -> None:
    offsets = pa.array([0, 2, 4, 5], pa.int32())
    lists = pa.ListArray.from_arrays(offsets, pa.array([1, 2, 3, 4, 5]), mask=pa.array([False, True, False]))
    assert json_values(lists).to_pylist() == [b"[1,2]", b"null", b"[5]"]
    assert json_values(lists.slice(1)).to_pylist() == [b"null", b"[5]"]


def test_unions_encode_their_active_member() -> None:
    sparse = pa.UnionArray.from_sparse(
        pa.array([0, 1, 0], pa.int8()), [pa.array([1, 2, 3]), pa.array(["a", "b", "c"])]
    )
    dense = pa.UnionArray.from_dense(
        pa.array([1, 0, 1], pa.int8()),
        pa.array([0, 0, 1], pa.int32()),
        [pa.array([2.0]), pa.array(["a", "b"])],
    )
    assert json_values(sparse.slice(1)).to_pylist() == [b'"b"', b"3"]
    assert json_values(dense).to_pylist() == [b'"a"', b"2.0", b'"b"']


def test_deeply_nested_values_match_their_top_level_encoding() -> None:
    inner = pa.struct([("at", pa.timestamp("ns", "UTC")), ("d", pa.duration("ms"))])
    col = pa.array(
        [[{"k": [{"at": PARIS_NOON, "d": dt.timedelta(seconds=1)}]}]],
        pa.list_(pa.struct([("k", pa.list_(inner))])),
    )
    assert _row(col) == b'[{"k":[{"at":"2024-01-01T12:00:00.000000000Z","d":1000}]}]'


def test_nested_nanosecond_timestamps_encode_without_pandas(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import sys

        class NoPandas:  # as in an install without pandas: importing it fails
            def find_spec(self, name, path=None, target=None):
                if name == "pandas" or name.startswith("pandas."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoPandas())
        sys.modules.pop("pandas", None)
        import pyarrow as pa
        from shardline.faketransport import FAKE_LIMITS
        from shardline.records import RecordMapping, map_columns
        at = pa.array([1704067200 * 10**9 + 1], pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        event = pa.StructArray.from_arrays([at, pa.array(["click"])], ["at", "kind"])
        wait = pa.array([1500000001]).cast(pa.duration("ns"))
        waits = pa.ListArray.from_arrays(pa.array([0, 1], pa.int32()), wait)
        batch = pa.record_batch({"event": event, "waits": waits})
        try:
            import pandas  # noqa: F401
            raise SystemExit("pandas is importable")
        except ImportError:
            pass
        try:
            batch.column(0).to_pylist()
            raise SystemExit("pyarrow converted nanoseconds without pandas: this test proves nothing")
        except (ValueError, ImportError):
            pass
        cols = map_columns(batch, RecordMapping(), FAKE_LIMITS)
        print(cols.data[0].as_py().decode())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert orjson.loads(out.stdout) == {
        "event": {"at": "2024-01-01T00:00:00.000000001Z", "kind": "click"},
        "waits": [1500000001],
    }


VIEWS = ("string_view", "binary_view", "list_view")  # RecordBatch.nbytes raises for these


def _write_through_the_sink(batch: pa.RecordBatch, data: str) -> int:
    from shardline.faketransport import FakeTransport
    from shardline.sink import StreamSink

    transport = FakeTransport(shard_count=2)
    template = "|".join("{" + n + "}" for n in batch.schema.names) if data == "template" else None
    with StreamSink(transport, data=data, data_template=template, partition_key="int8") as sink:
        sink.write(batch)
        sink.flush()
    assert not transport.violations
    return len(transport.records())


@pytest.mark.parametrize("data", ["json", "arrow", "template"])
def test_the_sink_writes_a_batch_holding_every_type(data: str) -> None:
    cases = [(name, arr) for name, arr, _ in TYPES if name not in VIEWS]
    batch = pa.record_batch([arr for _, arr in cases], names=[name for name, _ in cases])
    assert _write_through_the_sink(batch, data) == batch.num_rows


def test_batch_nbytes_measures_every_type() -> None:
    from shardline.records import batch_nbytes

    batch = pa.record_batch([arr for _, arr, _ in TYPES], names=[name for name, _, _ in TYPES])
    assert batch_nbytes(batch) > 0
    assert batch_nbytes(batch.slice(1)) > 0


def test_the_sink_writes_view_columns() -> None:
    if not hasattr(pa, "string_view"):
        raise AssertionError("no view types in this pyarrow")
    batch = pa.record_batch(
        {"int8": pa.array([1, 2], pa.int8()), "v": pa.array(["a", "b"], pa.string_view())}
    )
    assert _write_through_the_sink(batch, "json") == 2
