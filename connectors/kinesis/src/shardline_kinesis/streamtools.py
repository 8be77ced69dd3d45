"""Stream helpers of the test kit over a botocore or boto3 Kinesis client: create, reshard, read back.

    create_stream(client, "s", shards=2)                 # returns once the stream is ACTIVE
    for shard_id, record in read_stream(client, "s"):    # parents before children, like the KCL
        ...

Reading order across a reshard (https://docs.aws.amazon.com/streams/latest/dev/kinesis-using-sdk-java-after-resharding.html):
a child shard is read only after its parent (``ParentShardId``) and adjacent parent
(``AdjacentParentShardId``) are read to their end, so a key's records from a closed parent come
before its records in the children.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

ACTIVE_TIMEOUT_S = 30.0


class StreamTimeout(TimeoutError):
    """A stream did not reach the wanted state, or could not be read, before the deadline."""


def wait_active(client: Any, stream: str, timeout_s: float = ACTIVE_TIMEOUT_S) -> dict[str, Any]:
    """Poll DescribeStreamSummary until ``stream`` is ACTIVE; return the summary.

    Raises :class:`StreamTimeout` after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        summary: dict[str, Any] = client.describe_stream_summary(StreamName=stream)[
            "StreamDescriptionSummary"
        ]
        if summary["StreamStatus"] == "ACTIVE":
            return summary
        if time.monotonic() >= deadline:
            raise StreamTimeout(
                f"stream {stream!r} is still {summary['StreamStatus']} after {timeout_s:.0f} s"
            )
        time.sleep(0.02)  # poll interval of a wait that has a deadline


def create_stream(
    client: Any, stream: str, shards: int, timeout_s: float = ACTIVE_TIMEOUT_S
) -> dict[str, Any]:
    """CreateStream with ``shards`` shards (provisioned mode); return its summary once ACTIVE."""
    client.create_stream(StreamName=stream, ShardCount=shards)
    return wait_active(client, stream, timeout_s)


def list_shards(client: Any, stream: str) -> list[dict[str, Any]]:
    """Every shard of ``stream``, open and closed (ListShards, all pages), in the order listed."""
    shards: list[dict[str, Any]] = []
    answer = client.list_shards(StreamName=stream)
    shards += answer["Shards"]
    while answer.get("NextToken"):
        answer = client.list_shards(NextToken=answer["NextToken"])
        shards += answer["Shards"]
    return shards


def is_open(shard: dict[str, Any]) -> bool:
    """Whether a ListShards shard takes writes: no ``EndingSequenceNumber`` (kinesis-mock writes
    ``null`` for an open shard)."""
    return (shard.get("SequenceNumberRange") or {}).get("EndingSequenceNumber") is None


def open_shards(client: Any, stream: str) -> list[dict[str, Any]]:
    """The shards of ``stream`` that take writes."""
    return [s for s in list_shards(client, stream) if is_open(s)]


def wait_open_shards(client: Any, stream: str, count: int, timeout_s: float = ACTIVE_TIMEOUT_S) -> None:
    """Poll until ``stream`` is ACTIVE with ``count`` open shards covering the hash-key space.

    After UpdateShardCount, kinesis-mock may still say ACTIVE with the old shards, or show closed
    parents before their children: ACTIVE alone does not mean done. Raises :class:`StreamTimeout`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        wait_active(client, stream, max(0.1, deadline - time.monotonic()))
        shards = sorted(open_shards(client, stream), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        bounds = [
            (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
            for s in shards
        ]
        covers = bool(bounds) and bounds[0][0] == 0 and bounds[-1][1] == 2**128 - 1
        covers = covers and all(a[1] + 1 == b[0] for a, b in itertools.pairwise(bounds))
        if len(shards) == count and covers:
            return
        if time.monotonic() >= deadline:
            raise StreamTimeout(
                f"stream {stream!r} has {len(shards)} open shards, not {count}, after {timeout_s:.0f} s"
            )
        time.sleep(0.02)  # poll interval of a wait that has a deadline


def split_every_shard(client: Any, stream: str, timeout_s: float = ACTIVE_TIMEOUT_S) -> int:
    """SplitShard each open shard at the middle of its hash-key range; return how many were split.

    Waits for ACTIVE after each split (a stream takes one reshard at a time).
    """
    split = 0
    for shard in open_shards(client, stream):
        low = int(shard["HashKeyRange"]["StartingHashKey"])
        high = int(shard["HashKeyRange"]["EndingHashKey"])
        if high - low < 1:
            continue
        client.split_shard(
            StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high + 1) // 2)
        )
        wait_active(client, stream, timeout_s)
        split += 1
    return split


def shards_in_read_order(client: Any, stream: str) -> list[dict[str, Any]]:
    """The shards of ``stream``, each after its parent and adjacent parent (ties: by ShardId)."""
    shards = {s["ShardId"]: s for s in list_shards(client, stream)}
    done: set[str] = set()
    order: list[dict[str, Any]] = []

    def visit(shard_id: str) -> None:
        if shard_id in done or shard_id not in shards:  # a parent past retention is not listed
            return
        done.add(shard_id)
        shard = shards[shard_id]
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent:
                visit(parent)
        order.append(shard)

    for shard_id in sorted(shards):
        visit(shard_id)
    return order


def read_shard(
    client: Any, stream: str, shard: dict[str, Any], timeout_s: float = ACTIVE_TIMEOUT_S, limit: int = 1000
) -> Iterator[dict[str, Any]]:
    """The records of one shard from TRIM_HORIZON to now (a closed shard: to its end).

    Each is GetRecords' record (``Data`` bytes, ``PartitionKey``, ``SequenceNumber``, …). Pages of
    at most ``limit`` records, so memory stays bounded. Raises :class:`StreamTimeout` if reading
    takes longer than ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    closed = not is_open(shard)
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    while iterator:
        if time.monotonic() >= deadline:
            raise StreamTimeout(f"reading {stream}/{shard['ShardId']} took over {timeout_s:.0f} s")
        answer = client.get_records(ShardIterator=iterator, Limit=limit)
        yield from answer["Records"]
        iterator = answer.get("NextShardIterator")
        if not closed and not answer["Records"] and answer.get("MillisBehindLatest", 0) == 0:
            return  # an open shard read up to now


def read_stream(
    client: Any, stream: str, timeout_s: float = 4 * ACTIVE_TIMEOUT_S
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(shard_id, record)`` for every record of ``stream``, shards in :func:`shards_in_read_order`."""
    deadline = time.monotonic() + timeout_s
    for shard in shards_in_read_order(client, stream):
        left = max(0.1, deadline - time.monotonic())
        for record in read_shard(client, stream, shard, timeout_s=left):
            yield shard["ShardId"], record
