"""The sink engine into kinesalite through the kinesis:// transport: every record once, byte for
byte, in per-key order — plainly, through 30% injected throttling, and with KPL aggregation."""

from __future__ import annotations

import base64
from typing import Any

import pyarrow as pa
import pytest
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from shardline import StreamSink
from shardline.errors import AccessDeniedError, ConfigError, SchemaError, StreamNotFoundError
from shardline_kinesis.aggregation import MAGIC
from shardline_kinesis.streamtools import read_stream


def _batches(n: int, keys: int, per_batch: int) -> list[pa.RecordBatch]:
    rows = [(f"user-{i % keys}", b"\x00row-%d\xff" % i) for i in range(n)]
    return [
        pa.record_batch({"key": [k for k, _ in part], "value": [v for _, v in part]})
        for part in (rows[i : i + per_batch] for i in range(0, n, per_batch))
    ]


def _expected(batches: list[pa.RecordBatch]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for b in batches:
        for k, v in zip(b.column("key").to_pylist(), b.column("value").to_pylist(), strict=True):
            out.setdefault(k, []).append(v)
    return out


def _write(url: str, batches: list[pa.RecordBatch], **options: Any) -> Any:
    acks: list[int] = []
    with StreamSink(
        url,
        partition_key="key",
        data="raw",
        data_column="value",
        create={"shards": 2, "retention_hours": 24},
        backoff_base_s=0.01,
        backoff_max_s=0.2,
        **options,
    ) as sink:
        for i, batch in enumerate(batches):
            sink.write(batch, ack=lambda i=i: acks.append(i))
        sink.flush(timeout=120)
        metrics = sink.metrics
    assert acks == list(range(len(batches)))
    return metrics


def _first_occurrences(values: list[bytes]) -> list[bytes]:
    seen: set[bytes] = set()
    return [v for v in values if not (v in seen or seen.add(v))]  # type: ignore[func-returns-value]


def _read(kinesalite: Any, name: str) -> dict[str, list[bytes]]:
    got: dict[str, list[bytes]] = {}
    for _, r in read_stream(kinesalite.client(), name):
        got.setdefault(r["PartitionKey"], []).append(r["Data"])
    return got


def test_records_land_once_in_per_key_order(kinesalite: Any) -> None:
    name = kinesalite.unique_name("sink")
    batches = _batches(600, keys=25, per_batch=200)
    _write(kinesalite.stream_url(name), batches)
    assert _read(kinesalite, name) == _expected(batches)


def test_throttled_records_are_retried_in_order(kinesalite: Any, fault_proxy: Any) -> None:
    name = kinesalite.unique_name("sink-thr")
    proxy = fault_proxy(kinesalite.endpoint_url, rate=0.3, seed=11)
    batches = _batches(300, keys=15, per_batch=100)
    metrics = _write(kinesalite.stream_url(name, endpoint_url=proxy.url), batches)
    assert metrics.retries > 0
    got = _read(kinesalite, name)
    for key, values in _expected(batches).items():
        assert _first_occurrences(got[key]) == values


def test_aggregated_records_deaggregate_to_every_record_in_order(kinesalite: Any, fault_proxy: Any) -> None:
    name = kinesalite.unique_name("sink-agg")
    proxy = fault_proxy(kinesalite.endpoint_url, rate=0.3, seed=5)
    batches = _batches(3000, keys=3, per_batch=1000)
    _write(kinesalite.stream_url(name, endpoint_url=proxy.url) + "&aggregate=true", batches)
    read = [r for _, r in read_stream(kinesalite.client(), name)]
    assert len(read) < 3000 / 10  # packed: far fewer Kinesis records than rows
    assert all(r["Data"].startswith(MAGIC) for r in read)
    got: dict[str, list[bytes]] = {}
    for u in iter_deaggregate_records(read, data_format="Boto3"):
        assert u["kinesis"].get("aggregated")
        got.setdefault(u["kinesis"]["partitionKey"], []).append(base64.b64decode(u["kinesis"]["data"]))
    for key, values in _expected(batches).items():
        assert _first_occurrences(got[key]) == values


def test_records_kinesis_cannot_take_are_dead_lettered(kinesalite: Any) -> None:
    name = kinesalite.unique_name("sink-dead")
    batch = pa.record_batch(
        {"key": ["ok", None, "", "k" * 257, "big"], "value": [b"a", b"b", b"c", b"d", b"x" * (2**20 - 2)]}
    )
    with StreamSink(
        kinesalite.stream_url(name),
        partition_key="key",
        data="raw",
        data_column="value",
        create={"shards": 1, "retention_hours": 24},
    ) as sink:
        sink.write(batch)
        sink.flush(timeout=60)
        dead = sink.dead_letters
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == 4, reasons
    assert any("1048577 bytes" in r or "Data" in r for r in reasons)
    assert [r["Data"] for _, r in read_stream(kinesalite.client(), name)] == [b"a"]


def test_a_mapping_with_client_info_is_refused(kinesalite: Any) -> None:
    with pytest.raises((ConfigError, SchemaError), match="client info"):
        StreamSink(kinesalite.stream_url("never-created"), partition_key="key", client_info="ci")


def test_a_missing_stream_without_create_stops_the_sink_at_start(kinesalite: Any) -> None:
    with pytest.raises(StreamNotFoundError, match="absent-stream"):
        StreamSink(
            kinesalite.stream_url("absent-stream"), partition_key="key", data="raw", data_column="value"
        )


class _Refusing:
    """An endpoint that refuses every call's credentials, as Kinesis does for an unknown key."""

    async def startup(self) -> None:
        pass

    async def cleanup(self) -> None:
        pass

    async def __call__(self, request: Any) -> Any:
        from aiohttp import web

        await request.read()
        body = b'{"__type":"UnrecognizedClientException","message":"The security token is invalid."}'
        return web.Response(status=400, body=body)


def test_refused_credentials_stop_the_sink_with_access_denied(shardline_kinesis_env: None) -> None:
    from shardline_kinesis._aiothread import ThreadedServer

    server = ThreadedServer(_Refusing(), "refusing")
    try:
        with pytest.raises(AccessDeniedError, match="AWS_PROFILE") as caught:
            StreamSink(f"kinesis://orders?region=us-east-1&endpoint_url={server.url}", partition_key="key")
    finally:
        server.stop()
    assert "orders" in str(caught.value) and "AKID" not in str(caught.value)
