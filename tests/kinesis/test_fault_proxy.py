"""The test kit's fault proxy and null endpoint, driven by boto3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from shardline.errors import ConfigError
from shardline_kinesis.faultproxy import THROTTLED, ThrottleFaults
from shardline_kinesis.nullendpoint import start_null_endpoint_thread
from shardline_kinesis.streamtools import create_stream, read_stream

from .conftest import boto3_client
from .test_emulators import _shard_of


def _entries(n: int) -> list[dict[str, Any]]:
    return [{"Data": b"rec-%04d" % i, "PartitionKey": f"k{i % 5}"} for i in range(n)]


@pytest.mark.parametrize("shape", ["random", "tail"])
def test_throttled_records_are_not_stored_and_answered_in_place(
    kinesalite: Any, fault_proxy: Callable[..., Any], shape: str
) -> None:
    proxy = fault_proxy(kinesalite.endpoint_url, rate=0.3, shape=shape, seed=11)
    client = boto3_client(proxy.url)
    name = kinesalite.unique_name("fp")
    create_stream(client, name, 2)  # passes through
    written: list[bytes] = []
    failed = 0
    for _ in range(6):
        entries = _entries(100)
        answer = client.put_records(StreamName=name, Records=entries)
        assert len(answer["Records"]) == len(entries)
        errors = [i for i, r in enumerate(answer["Records"]) if "ErrorCode" in r]
        assert answer["FailedRecordCount"] == len(errors)
        assert all(answer["Records"][i]["ErrorCode"] == THROTTLED for i in errors)
        if shape == "tail":
            assert errors == list(range(len(entries) - len(errors), len(entries)))
        ok = [i for i, r in enumerate(answer["Records"]) if "ErrorCode" not in r]
        assert all(answer["Records"][i]["ShardId"].startswith("shardId-") for i in ok)
        written += [entries[i]["Data"] for i in ok]
        failed += len(errors)
    assert proxy.stats.injected == failed
    assert 0.2 * 600 < failed < 0.4 * 600
    stored = [r["Data"] for _, r in read_stream(boto3_client(kinesalite.endpoint_url), name)]
    assert sorted(stored) == sorted(written)


def test_a_request_with_every_record_throttled_is_not_forwarded(
    kinesalite: Any, fault_proxy: Callable[..., Any]
) -> None:
    proxy = fault_proxy(kinesalite.endpoint_url, rate=1.0)
    client = boto3_client(proxy.url)
    name = kinesalite.unique_name("fp")
    create_stream(client, name, 1)
    answer = client.put_records(StreamName=name, Records=_entries(10))
    assert answer["FailedRecordCount"] == 10
    proxy.faults.rate = 0.0
    assert client.put_records(StreamName=name, Records=_entries(3))["FailedRecordCount"] == 0
    assert len(list(read_stream(client, name))) == 3


def test_fault_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="fraction"):
        ThrottleFaults(rate=1.5)
    with pytest.raises(ConfigError, match="shape"):
        ThrottleFaults(rate=0.1, shape="head")


def test_null_endpoint_answers_success_on_the_md5_shard(shardline_kinesis_env: None) -> None:
    with start_null_endpoint_thread(shards=4) as server:
        client = boto3_client(server.url)
        shards = client.list_shards(StreamName="any")["Shards"]
        assert len(shards) == 4
        entries = _entries(500)
        answer = client.put_records(StreamName="any", Records=entries)
        assert answer["FailedRecordCount"] == 0 and len(answer["Records"]) == 500
        for entry, result in zip(entries, answer["Records"], strict=True):
            assert result["ShardId"] == _shard_of(entry["PartitionKey"], shards)
        assert server.handler.records == 500


def test_null_endpoint_fixture(shardline_kinesis_env: None, shardline_kinesis_null_endpoint: Any) -> None:
    answer = boto3_client(shardline_kinesis_null_endpoint.url).put_records(
        StreamName="n", Records=_entries(7)
    )
    assert [r["ShardId"] for r in answer["Records"]] == ["shardId-000000000000"] * 7


def test_hold_keeps_a_put_in_flight_until_released(kinesalite: Any, fault_proxy: Callable[..., Any]) -> None:
    import threading

    proxy = fault_proxy(kinesalite.endpoint_url)
    client = boto3_client(proxy.url)
    name = kinesalite.unique_name("hold")
    create_stream(client, name, 1)
    proxy.hold()
    answers: list[Any] = []
    writer = threading.Thread(
        target=lambda: answers.append(client.put_records(StreamName=name, Records=_entries(4)))
    )
    writer.start()
    assert proxy.wait_holding(30)
    assert not answers and list(read_stream(client, name)) == []  # held: not forwarded yet
    proxy.release()
    writer.join(30)
    assert answers and answers[0]["FailedRecordCount"] == 0
    assert len(list(read_stream(client, name))) == 4
