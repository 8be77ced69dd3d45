"""The test kit's emulators answer a real client (boto3): create, put, get back, reshard."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from shardline_kinesis.streamtools import (
    create_stream,
    open_shards,
    read_stream,
    wait_active,
    wait_open_shards,
)

from .conftest import boto3_client


def _put_and_read(emulator: Any, shards: int) -> tuple[Any, str, list[dict[str, Any]]]:
    client = boto3_client(emulator.endpoint_url)
    name = emulator.unique_name("rt")
    create_stream(client, name, shards)
    entries = [{"Data": b"\x00value-%d\xff" % i, "PartitionKey": f"key-{i % 7}"} for i in range(40)]
    answer = client.put_records(StreamName=name, Records=entries)
    assert answer["FailedRecordCount"] == 0
    assert len(answer["Records"]) == len(entries)
    return client, name, entries


def _landed(client: Any, name: str) -> list[tuple[str, str, bytes]]:
    return [(shard, r["PartitionKey"], r["Data"]) for shard, r in read_stream(client, name)]


def _shard_of(key: str, shards: list[dict[str, Any]]) -> str:
    point = int.from_bytes(hashlib.md5(key.encode()).digest(), "big")
    for shard in shards:
        low, high = (int(shard["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
        if low <= point <= high:
            return str(shard["ShardId"])
    raise AssertionError(f"no open shard holds the hash of {key!r}")


def test_kinesalite_round_trip_routes_by_md5_of_the_key(kinesalite: Any) -> None:
    client, name, entries = _put_and_read(kinesalite, shards=3)
    landed = _landed(client, name)
    assert sorted((k, d) for _, k, d in landed) == sorted((e["PartitionKey"], e["Data"]) for e in entries)
    shards = open_shards(client, name)
    assert all(shard == _shard_of(key, shards) for shard, key, _ in landed)
    for key in {e["PartitionKey"] for e in entries}:  # one shard per key: its records in put order
        assert [d for _, k, d in landed if k == key] == [
            e["Data"] for e in entries if e["PartitionKey"] == key
        ]


def test_kinesalite_split_shard_closes_the_parent_and_new_records_go_to_children(kinesalite: Any) -> None:
    client, name, entries = _put_and_read(kinesalite, shards=1)
    (parent,) = open_shards(client, name)
    middle = str(int(parent["HashKeyRange"]["EndingHashKey"]) // 2)
    client.split_shard(StreamName=name, ShardToSplit=parent["ShardId"], NewStartingHashKey=middle)
    wait_active(client, name)
    children = open_shards(client, name)
    assert len(children) == 2 and all(c["ParentShardId"] == parent["ShardId"] for c in children)
    client.put_records(StreamName=name, Records=entries)
    landed = _landed(client, name)
    assert [d for s, _, d in landed if s == parent["ShardId"]] == [e["Data"] for e in entries]
    after = [(s, k) for s, k, _ in landed if s != parent["ShardId"]]
    assert len(after) == len(entries) and all(s == _shard_of(k, children) for s, k in after)


def test_kinesis_local_update_shard_count_2_to_4(kinesis_local: Any) -> None:
    client, name, entries = _put_and_read(kinesis_local, shards=2)
    client.update_shard_count(StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    wait_open_shards(client, name, 4)
    client.put_records(StreamName=name, Records=entries)
    landed = _landed(client, name)
    assert sorted(d for _, _, d in landed) == sorted(e["Data"] for e in entries * 2)
    assert {s for s, _, _ in landed[-len(entries) :]} <= {s["ShardId"] for s in open_shards(client, name)}


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize("fixture", ["kinesalite", "kinesis_local"])
def test_emulators_listen_on_loopback_only(fixture: str, request: pytest.FixtureRequest) -> None:
    emulator = request.getfixturevalue(fixture)
    assert _listening_addresses(emulator.port) == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_the_pytest_plugin_imports_no_heavy_module_and_offers_only_prefixed_fixtures() -> None:
    import ast
    import subprocess
    import sys

    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import shardline_kinesis.testing as t\n"
        "print(sorted(m for m in ('aiohttp', 'botocore', 'boto3', 'orjson') if m in sys.modules))\n"
        "print(sorted(n for n, v in vars(t).items() if hasattr(v, '_fixture_function_marker')\n"
        "             or hasattr(v, '_pytestfixturefunction')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    heavy, fixtures = out.stdout.splitlines()
    assert heavy == "[]"
    assert "shardline_kinesalite" in fixtures and "shardline_kinesis_local" in fixtures
    assert all(name.startswith("shardline_") for name in ast.literal_eval(fixtures))
