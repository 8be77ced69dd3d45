"""The Transport protocol: the thin part a connector implements.

Like Flink's AsyncSink, the engine owns batching, limits, concurrency, ordering, retries and rate
control; a transport only knows how to send one request to one stream and report, per record,
what happened. Every method is a coroutine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class TransportOptions(BaseModel):
    """Base of the options model a transport factory may declare as its ``Options`` attribute.

    When a factory has one, ``[sink.transport]`` and ``StreamSink(transport_options=...)`` are
    validated against it (unknown keys are errors) before the factory is called, with the config's
    messages. ``access_key`` (``[sink] access_key``) is always accepted::

        class HttpOptions(TransportOptions):
            timeout: float = Field(60.0, gt=0)

        def http_transport(url, **options): ...
        http_transport.Options = HttpOptions
    """

    model_config = ConfigDict(extra="forbid")

    access_key: str | None = None


@dataclass(frozen=True, slots=True)
class HashRange:
    """One open shard of a hash-range addressed stream (Kinesis): its id and its hash-key range,
    inclusive, as 128-bit integers (``StartingHashKey``/``EndingHashKey`` of ListShards)."""

    shard_id: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What DescribeStream says about a stream.

    ``shards`` is given by hash-range addressed streams: the open shards, sorted by ``start``
    (``shard_count == len(shards)``); None for streams whose shards are numbered ``0..count-1``.
    """

    shard_count: int
    retention_hours: int
    shards: tuple[HashRange, ...] | None = None


@dataclass(frozen=True, slots=True)
class PutRecord:
    """One record of a PutRecords request (Data and client info as raw bytes, not base64).

    An explicitly placed record names its shard: ``shard_id`` (numbered shards) or ``hash_key``
    (a decimal 128-bit hash key inside the shard's range, for hash-range addressed streams).
    """

    data: bytes
    partition_key: str | None = None
    shard_id: int | None = None
    client_info: bytes | None = None
    hash_key: str | None = None


@dataclass(frozen=True, slots=True)
class PutResult:
    """The outcome of one record of a PutRecords request.

    Success: ``sequence_number`` and ``shard_id`` are set and ``error_code`` is None.
    Failure: ``error_code`` (a negative int) and ``error_message`` (an error name, what the sink
    classifies: retry, throttled, permanent...) are set; ``error_detail`` may say why in words
    (``"PartitionKey is 300 bytes; the limit is 256"``), shown in dead letters and errors.
    """

    shard_id: int | None = None
    sequence_number: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    error_detail: str | None = None

    @property
    def ok(self) -> bool:
        """True when the record was written."""
        return self.error_code is None


@dataclass(frozen=True, slots=True)
class PutFailure:
    """One failed record of a PutRecords request: its index in the request and the server's error
    (``error_message`` its name, ``error_detail`` why in words when the server said)."""

    index: int
    error_code: int
    error_message: str
    error_detail: str | None = None

    def describe(self) -> str:
        """``"InvalidArgumentException: PartitionKey is 300 bytes; the limit is 256"`` (or the name)."""
        name = self.error_message or f"error {self.error_code}"
        return f"{name}: {self.error_detail}" if self.error_detail else name


@dataclass(frozen=True, slots=True)
class PutBodyResult:
    """The outcome of a pre-encoded PutRecords request: only the failures, in request order.

    ``shard_ids``: the distinct ids of the shards the written records landed on, when the
    transport read them (None: not reported). An id the sink's shard map does not know means the
    stream was resharded: the sink refreshes its map at once.
    """

    record_count: int
    failures: list[PutFailure]
    shard_ids: frozenset[str] | None = None


def failures_of(results: Sequence[PutResult]) -> list[PutFailure]:
    """The failed entries of a list of :class:`PutResult`."""
    return [
        PutFailure(i, r.error_code, r.error_message or "", r.error_detail)
        for i, r in enumerate(results)
        if r.error_code is not None
    ]


@runtime_checkable
class BodyTransport(Protocol):
    """Optional fast path a transport may add: send a request body the engine already encoded.

    The body is what the transport's own :meth:`shardline.wire.Wire.body` assembled from the
    fragments its :meth:`~shardline.wire.Wire.fragments` encoded, so only the transport knows its
    format. The engine uses this path when the transport has the method and falls back to
    :meth:`Transport.put_records` otherwise.
    """

    async def put_records_body(self, body: bytes, record_count: int) -> PutBodyResult:
        """Send one pre-encoded PutRecords request; report the failed records (errors as in put_records)."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Sends requests to one stream. Implemented by connectors (v3io Web API, local store, Kinesis)."""

    url: str

    async def describe(self) -> StreamInfo:
        """Return the stream's shard count and retention; raise StreamNotFoundError when missing."""
        ...

    async def create(self, shard_count: int, retention_hours: int) -> bool:
        """Create the stream; return False (and change nothing) when it already exists."""
        ...

    async def update(self, shard_count: int) -> None:
        """Grow the stream to ``shard_count`` shards."""
        ...

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """Send one PutRecords request; return one result per record, in request order.

        Raise :class:`shardline.errors.TransportError` when the whole request failed (status,
        connection); per-record failures are reported in the results, not raised.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
