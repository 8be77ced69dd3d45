"""Fixtures of the Kinesis tests: the emulators and fault proxy of ``shardline_kinesis.testing``.

Short aliases of the ``shardline_``-prefixed fixtures the installed test kit offers (see
``tests/conftest.py`` for why the kit only offers prefixed names), and boto3 clients.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def kinesalite(shardline_kinesalite: Any) -> Any:
    """Alias of ``shardline_kinesalite`` (session process, dummy AWS environment for the test)."""
    return shardline_kinesalite


@pytest.fixture
def kinesis_local(shardline_kinesis_local: Any) -> Any:
    """Alias of ``shardline_kinesis_local``."""
    return shardline_kinesis_local


@pytest.fixture
def fault_proxy(shardline_kinesis_fault_proxy: Callable[..., Any]) -> Callable[..., Any]:
    """Alias of ``shardline_kinesis_fault_proxy`` (a factory of started proxies)."""
    return shardline_kinesis_fault_proxy


def boto3_client(endpoint_url: str) -> Any:
    """A boto3 Kinesis client of an emulator (credentials and region from the dummy environment)."""
    import boto3
    from botocore.config import Config

    return boto3.client("kinesis", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 1}))


# --------------------------------------------------------------------------- end-to-end helpers


def keyed_records(count: int, keys: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` (key, payload) pairs over ``keys`` keys; payloads unique, binary, not UTF-8.

    ``payload = b"KEY:SEQ:" + 8 random bytes + b"\\xff\\x00"``, SEQ counting per key.
    """
    import random

    rng = random.Random(seed)
    seq = [0] * keys
    out = []
    for i in range(count):
        k = (i * 7 + rng.randrange(3)) % keys
        key = f"key-{k}"
        out.append((key, b"%s:%d:" % (key.encode(), seq[k]) + rng.randbytes(8) + b"\xff\x00"))
        seq[k] += 1
    return out


def write_parquet(directory: Any, records: list[tuple[str, bytes]], files: int = 2) -> None:
    """``records`` into ``files`` Parquet files (columns ``key`` string, ``payload`` binary), in order."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(records) // files)
    for index in range(files):
        part = records[index * per_file : (index + 1) * per_file]
        table = pa.table(
            {
                "key": pa.array([k for k, _ in part], pa.string()),
                "payload": pa.array([p for _, p in part], pa.binary()),
            }
        )
        pq.write_table(table, out / f"part-{index:05d}.parquet", row_group_size=500)


def parquet_pipeline(
    path: Any, data_dir: Any, stream_url: str, *, batch_size: int = 1000, sink: str = ""
) -> Any:
    """A Parquet -> Kinesis pipeline file: ``key`` -> PartitionKey, ``payload`` as Data (raw)."""
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{data_dir}/*.parquet"
batch_size = {batch_size}

[sink]
stream = "{stream_url}"
{sink}

[mapping]
partition_key = "key"
data = "raw"
data_column = "payload"
"""
    )
    return path


def landed(client: Any, stream: str) -> list[tuple[str, str, bytes]]:
    """``(shard_id, partition_key, data)`` of every record, shards parents first (the KCL's order)."""
    from shardline_kinesis.streamtools import read_stream

    return [(shard, r["PartitionKey"], bytes(r["Data"])) for shard, r in read_stream(client, stream)]


def assert_landed_once_in_key_order(
    records: list[tuple[str, str, bytes]], written: list[tuple[str, bytes]]
) -> None:
    """Every written record landed exactly once, byte for byte, under its key, in per-key write order.

    Per-key order: for every key, the first occurrences of its records in stream order (``records``
    as :func:`landed` reads them) are its records in write order.
    """
    from collections import Counter

    counts = Counter((key, data) for _, key, data in records)
    expected = Counter(written)
    missing = expected - counts
    extra = counts - expected
    assert not missing, f"{sum(missing.values())} records never landed, e.g. {next(iter(missing))}"
    assert not extra, f"{sum(extra.values())} records landed twice or unasked, e.g. {next(iter(extra))}"
    by_key: dict[str, list[bytes]] = {}
    for key, data in written:
        by_key.setdefault(key, []).append(data)
    for key, datas in by_key.items():
        seen = list(dict.fromkeys(d for _, k, d in records if k == key))
        assert seen == datas, f"records of {key} out of order"


def assert_key_order_across_reshard(
    records: list[tuple[str, str, bytes]], shards: list[dict[str, Any]]
) -> None:
    """Each key's records sit in a chain of shards, each one a descendant of the one before.

    Kinesis routes a key by the MD5 of its key: after a split its records go to the one child
    whose hash range holds it; so in read order a key's shards never go back to an ancestor.
    """
    parents = {
        s["ShardId"]: {s.get("ParentShardId"), s.get("AdjacentParentShardId")} - {None} for s in shards
    }

    def ancestors(shard: str) -> set[str]:
        out: set[str] = set()
        todo = list(parents.get(shard, ()))
        while todo:
            parent = todo.pop()
            if parent not in out:
                out.add(parent)
                todo += parents.get(parent, ())
        return out

    chain: dict[str, list[str]] = {}
    for shard, key, _ in records:
        path = chain.setdefault(key, [])
        if not path or path[-1] != shard:
            path.append(shard)
    for key, path in chain.items():
        for before, after in itertools.pairwise(path):
            assert before in ancestors(after), f"{key}: read from {after} after {before}, not its descendant"
