"""``shardline stream create|describe|update|put|get|delete kinesis://STREAM`` — the stream commands'
access object for Kinesis (the commands themselves live with the ``stream`` group; the URL's scheme
picks this object through the transport factory's ``stream_access``).

Shards are named by their number: ``--shard 3`` is ``shardId-000000000003`` (Kinesis numbers shards
in creation order, children of a reshard after their parents). ``get`` reads every shard, closed
parents included, each to its end; ``--seek`` maps to the ShardIteratorType ``earliest`` ->
TRIM_HORIZON, ``latest`` -> LATEST, ``sequence`` -> AT_SEQUENCE_NUMBER, ``time`` -> AT_TIMESTAMP
(https://docs.aws.amazon.com/kinesis/latest/APIReference/API_GetShardIterator.html).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pybase64
from shardline import PutRecord, PutResult

from shardline_kinesis.transport import KinesisTransport, shard_index

_ITERATOR_TYPES = {
    "EARLIEST": "TRIM_HORIZON",
    "LATEST": "LATEST",
    "SEQUENCE": "AT_SEQUENCE_NUMBER",
    "TIME": "AT_TIMESTAMP",
}


@dataclass(frozen=True, slots=True)
class KinesisRecord:
    """One record read back (the fields ``stream get`` prints)."""

    sequence_number: int
    data: bytes
    partition_key: str | None
    arrival_time_sec: int
    arrival_time_nsec: int
    client_info: bytes | None = None


@dataclass(frozen=True, slots=True)
class KinesisRead:
    """A GetRecords answer: ``next_location`` is None once a closed shard is read to its end;
    ``records_behind_latest`` is 0 when nothing more is there now."""

    next_location: str | None
    msec_behind_latest: int
    records_behind_latest: int
    records: list[KinesisRecord] = field(default_factory=list)


def shard_name(number: int) -> str:
    """3 -> ``"shardId-000000000003"``."""
    return f"shardId-{number:012d}"


class KinesisAccess(KinesisTransport):
    """A Kinesis stream for the ``shardline stream`` commands."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._keys = itertools.count()

    async def readable_shards(self) -> list[int]:
        """Numbers of every shard still holding records (open and closed), parents first."""
        shards = await self.client.list_shards(self.stream_name)
        return sorted(i for s in shards if (i := shard_index(s.shard_id)) is not None)

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """PutRecords; a record without a key gets a distinct one (its running number), so
        records without ``--key`` spread over the shards."""
        keyed = [r if r.partition_key else replace(r, partition_key=str(next(self._keys))) for r in records]
        return await super().put_records(keyed)

    async def seek(
        self,
        shard_id: int,
        seek_type: str,
        *,
        sequence_number: int | None = None,
        timestamp_sec: int | None = None,
        timestamp_nsec: int = 0,
    ) -> str:
        """A shard iterator of ``shardId-<shard_id>``."""
        kind = _ITERATOR_TYPES[seek_type.upper()]
        return await self.client.get_shard_iterator(
            self.stream_name,
            shard_name(shard_id),
            kind,
            sequence_number=str(sequence_number) if kind == "AT_SEQUENCE_NUMBER" else None,
            timestamp=timestamp_sec + timestamp_nsec / 1e9
            if kind == "AT_TIMESTAMP" and timestamp_sec is not None
            else None,
        )

    async def get_records(self, shard_id: int, location: str | None, limit: int = 1000) -> KinesisRead:
        """GetRecords from an iterator (``location``)."""
        if location is None:  # a closed shard already read to its end
            return KinesisRead(None, 0, 0)
        doc = await self.client.get_records(self.stream_name, location, min(limit, 10_000))
        records = []
        for r in doc.get("Records", []):
            arrival = float(r.get("ApproximateArrivalTimestamp", 0.0))
            sec = int(arrival)
            records.append(
                KinesisRecord(
                    sequence_number=int(r["SequenceNumber"]),
                    data=pybase64.b64decode(r["Data"]),
                    partition_key=r.get("PartitionKey"),
                    arrival_time_sec=sec,
                    arrival_time_nsec=round((arrival - sec) * 1e9),
                )
            )
        next_location = doc.get("NextShardIterator")
        behind = int(doc.get("MillisBehindLatest", 0))
        done = next_location is None or (behind == 0 and len(records) < limit)
        return KinesisRead(next_location, behind, 0 if done else 1, records)
