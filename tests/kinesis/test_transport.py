"""The kinesis:// transport against kinesalite: create, describe, put (pre-encoded and plain), read
back, reshard, errors; and its URL and options."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import orjson
import pytest
from shardline.errors import ConfigError, StreamNotFoundError
from shardline.transport import PutRecord
from shardline_kinesis.streamtools import read_stream, split_every_shard
from shardline_kinesis.transport import KinesisTransport, parse_kinesis_url, validate
from shardline_kinesis.wire import KinesisWire


def _body(wire: KinesisWire, records: list[tuple[bytes, str]]) -> bytes:
    frags = [
        orjson.dumps({"Data": base64.b64encode(d).decode(), "PartitionKey": k}) + b"," for d, k in records
    ]
    return wire.body(frags)


def _md5(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


def test_create_describe_put_and_read_back(kinesalite: Any) -> None:
    name = kinesalite.unique_name("t")
    records = [(b"\x00payload-%d\xff" % i, f"key-{i % 5}") for i in range(30)]

    async def main() -> Any:
        t = KinesisTransport(kinesalite.stream_url(name))
        try:
            assert await t.create(2, 24) is True
            assert await t.create(2, 24) is False
            info = await t.describe()
            result = await t.put_records_body(_body(t.wire, records), len(records))
            return info, result
        finally:
            await t.close()

    info, result = asyncio.run(main())
    assert info.shard_count == 2 and info.retention_hours == 24
    assert info.shards[0].start == 0 and info.shards[-1].end == 2**128 - 1
    assert info.shards[0].end + 1 == info.shards[1].start
    assert result.failures == []
    assert result.shard_ids and result.shard_ids <= {s.shard_id for s in info.shards}
    landed = [(shard, r["PartitionKey"], r["Data"]) for shard, r in read_stream(kinesalite.client(), name)]
    assert sorted((k, d) for _, k, d in landed) == sorted((k, d) for d, k in records)
    for shard_id, key, _ in landed:  # each key on the shard whose range holds MD5(key)
        (owner,) = [s for s in info.shards if s.start <= _md5(key) <= s.end]
        assert owner.shard_id == shard_id
    for key in {k for _, k in records}:  # per-key order
        assert [d for _, k, d in landed if k == key] == [d for d, k in records if k == key]


def test_describe_after_a_split_lists_the_open_children(kinesalite: Any) -> None:
    name = kinesalite.unique_name("split")

    async def create() -> None:
        t = KinesisTransport(kinesalite.stream_url(name))
        await t.create(2, 24)
        await t.close()

    async def describe() -> Any:
        t = KinesisTransport(kinesalite.stream_url(name))
        try:
            return await t.describe()
        finally:
            await t.close()

    asyncio.run(create())
    assert split_every_shard(kinesalite.client(), name) == 2
    info = asyncio.run(describe())
    assert info.shard_count == 4
    assert {s.shard_id for s in info.shards}.isdisjoint({"shardId-000000000000", "shardId-000000000001"})
    assert info.shards[0].start == 0 and info.shards[-1].end == 2**128 - 1
    for a, b in zip(info.shards, info.shards[1:], strict=False):
        assert a.end + 1 == b.start


def test_plain_put_records_with_shard_id_sends_the_explicit_hash_key(kinesalite: Any) -> None:
    name = kinesalite.unique_name("plain")

    async def main() -> Any:
        t = KinesisTransport(kinesalite.stream_url(name))
        try:
            await t.create(3, 24)
            return await t.put_records([PutRecord(b"a", "same-key", shard_id=s) for s in (0, 1, 2)])
        finally:
            await t.close()

    results = asyncio.run(main())
    assert [r.shard_id for r in results] == [0, 1, 2]
    assert all(r.ok and r.sequence_number for r in results)


def test_a_missing_stream_is_stream_not_found_naming_it(kinesalite: Any) -> None:
    async def main() -> None:
        t = KinesisTransport(kinesalite.stream_url("no-such-stream"))
        try:
            await t.describe()
        finally:
            await t.close()

    with pytest.raises(StreamNotFoundError, match="no-such-stream"):
        asyncio.run(main())


def test_throttled_records_are_reported_per_record(kinesalite: Any, fault_proxy: Any) -> None:
    name = kinesalite.unique_name("thr")
    records = [(b"r%d" % i, f"k{i}") for i in range(20)]

    async def main() -> Any:
        direct = KinesisTransport(kinesalite.stream_url(name))
        await direct.create(1, 24)
        await direct.close()
        proxy = fault_proxy(kinesalite.endpoint_url, rate=0.5, seed=3)
        t = KinesisTransport(kinesalite.stream_url(name, endpoint_url=proxy.url))
        try:
            return await t.put_records_body(_body(t.wire, records), len(records)), t.wire
        finally:
            await t.close()

    result, wire = asyncio.run(main())
    assert 0 < len(result.failures) < len(records)
    assert {f.error_message for f in result.failures} == {"ProvisionedThroughputExceededException"}
    assert {wire.classify(f).name for f in result.failures} == {"THROTTLED"}
    landed = sorted(r["Data"] for _, r in read_stream(kinesalite.client(), name))
    failed = {f.index for f in result.failures}
    assert landed == sorted(d for i, (d, _) in enumerate(records) if i not in failed)


def test_url_query_parameters_are_the_transport_options() -> None:
    name, options = parse_kinesis_url(
        "kinesis://orders.v1?region=eu-west-1&endpoint_url=http%3A%2F%2F127.0.0.1%3A4567&aggregate=true"
    )
    assert name == "orders.v1"
    assert (options.region, options.endpoint_url, options.aggregate) == (
        "eu-west-1",
        "http://127.0.0.1:4567",
        True,
    )


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("kinesis://bad/name", {}, "stream name"),
        ("kinesis://", {}, "stream name"),
        ("kinesis://s?regoin=eu-west-1", {}, "regoin"),
        ("kinesis://s?region=eu-west-1", {"region": "us-east-1"}, "both in the URL"),
        ("kinesis://s", {"access_key": "k"}, "AWS chain"),
        ("kinesis://s", {"timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_urls_and_options_are_config_errors(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(url, options)


def test_region_comes_from_an_aws_endpoint_host(shardline_kinesis_env: None, monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    t = KinesisTransport("kinesis://s?endpoint_url=https://kinesis.ap-south-1.amazonaws.com")
    assert t.client.region == "ap-south-1"


def test_the_plugin_registers_the_scheme_with_its_options_model() -> None:
    from shardline.config import check_transport_options
    from shardline.plugins import registered

    factory = registered("transports")["kinesis"]
    assert check_transport_options("kinesis://s", factory, {"region": "eu-west-1"}) == {"region": "eu-west-1"}
    with pytest.raises(ConfigError, match="endpoint"):
        check_transport_options("kinesis://s", factory, {"endpoint": "http://x"})
