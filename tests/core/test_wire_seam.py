"""The engine is protocol-neutral: it takes limits, encoding and error outcomes from the
transport's wire, and refuses what the wire says the stream cannot take."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest
from shardline import ConfigError, PluginError, StreamSink
from shardline.config import LimitsOptions
from shardline.faketransport import FAKE_LIMITS, FakeTransport, FakeWire
from shardline.records import RecordMapping, map_columns

FAST = {"linger_ms": 0.0, "backoff_base_s": 0.001, "backoff_max_s": 0.01}


class _NoWire:
    """A transport that predates the wire: it sends, but says nothing of its protocol."""

    url = "nowire://s"

    def __init__(self) -> None:
        self.inner = FakeTransport()

    async def describe(self):  # type: ignore[no-untyped-def]
        return await self.inner.describe()

    async def close(self) -> None:
        pass


def test_a_transport_without_a_wire_is_refused_by_name() -> None:
    with pytest.raises(PluginError, match=r"transport _NoWire \(nowire://s\) has no `wire`"):
        StreamSink(_NoWire())  # type: ignore[arg-type]


def test_request_limits_are_settable_below_the_wire_limits() -> None:
    transport = FakeTransport(shard_count=1)
    batch = pa.record_batch({"k": [f"k{i}" for i in range(2_000)], "v": list(range(2_000))})
    with StreamSink(
        transport, partition_key="k", max_records_per_request=70, max_request_bytes=3_000, **FAST
    ) as sink:
        sink.write(batch)
    assert len(transport.records()) == 2_000
    assert max(transport.request_sizes) <= 70
    assert 2_000 < transport.max_body_bytes <= 3_000
    assert transport.violations == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_records_per_request", FAKE_LIMITS.max_records_per_request + 1),
        ("max_request_bytes", FAKE_LIMITS.max_request_bytes + 1),
    ],
)
def test_request_limits_above_the_wire_limits_are_config_errors(option: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"{option}={value:,} is above what the stream accepts"):
        StreamSink(FakeTransport(), **{option: value})  # type: ignore[arg-type]


def test_sink_limits_of_a_config_read_request_limits_in_units() -> None:
    limits = LimitsOptions.model_validate({"max_records_per_request": 100, "max_request_bytes": "1MiB"})
    assert (limits.max_records_per_request, limits.max_request_bytes) == (100, 2**20)
    assert LimitsOptions.model_validate({}).max_request_bytes is None  # the wire's, by default


def _wire(**changes: object) -> FakeWire:
    return FakeWire(dataclasses.replace(FAKE_LIMITS, **changes))  # type: ignore[arg-type]


def test_a_mapping_asking_for_client_info_is_refused_when_the_stream_has_none() -> None:
    transport = FakeTransport(wire=_wire(client_info=False))
    with pytest.raises(ConfigError, match=r"client_info='ci'.*no client info field"):
        StreamSink(transport, client_info="ci")


def test_record_size_counts_the_key_when_the_wire_says_so() -> None:
    batch = pa.record_batch({"v": [b"x" * 90, b"x" * 95, b"x" * 100], "k": ["abcd", "abcd", ""]})
    mapping = RecordMapping(data="raw", data_column="v", partition_key="k")
    counted = map_columns(
        batch, mapping, dataclasses.replace(FAKE_LIMITS, max_record_bytes=96, record_counts_key=True)
    )
    assert counted.invalid.tolist() == [False, True, True]
    assert counted.reasons[1] == "record is 99 bytes (Data 95 + PartitionKey 4); the limit is 96 bytes"
    plain = map_columns(batch, mapping, dataclasses.replace(FAKE_LIMITS, max_record_bytes=96))
    assert plain.invalid.tolist() == [False, False, True]


def test_key_length_in_characters_minimum_and_required_keys() -> None:
    batch = pa.record_batch({"k": ["é" * 3, "é" * 4, "", None]})
    limits = dataclasses.replace(
        FAKE_LIMITS, max_key_length=3, key_length_unit="chars", min_key_length=1, key_required=True
    )
    cols = map_columns(batch, RecordMapping(partition_key="k"), limits)
    assert cols.invalid.tolist() == [False, True, True, True]  # 6 bytes but 3 characters is fine
    assert cols.reasons[1] == "PartitionKey is 4 characters; the limit is 3 characters"
    assert cols.reasons[2] == "PartitionKey is 0 characters; the stream needs at least 1"
    assert cols.reasons[3] == "PartitionKey is null; the stream needs a key for every record"
    in_bytes = map_columns(batch, RecordMapping(partition_key="k"), FAKE_LIMITS)
    assert in_bytes.invalid.tolist() == [False, False, False, False]  # the fake allows empty and null keys
