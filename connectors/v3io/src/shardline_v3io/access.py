"""One async interface to a stream for the ``shardline stream`` commands, whatever the URL scheme.

``http(s)://`` and ``v3io://`` go through :class:`V3ioClient`; ``local://`` uses the store in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shardline import PutRecord, PutResult, StreamInfo

from shardline_v3io.client import GetRecordsResult, StreamRecord, V3ioClient
from shardline_v3io.local import LocalTransport, map_store_error
from shardline_v3io.store import StoreError
from shardline_v3io.urls import StreamURL, parse_stream_url

_V3IO_SCHEMES = frozenset({"http", "https", "v3io", "local"})


class StreamAccess(Protocol):
    """What the stream commands need from a stream."""

    url: str

    async def create(self, shard_count: int, retention_hours: int) -> bool: ...
    async def describe(self) -> StreamInfo: ...
    async def update(self, shard_count: int) -> None: ...
    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]: ...
    async def seek(
        self,
        shard_id: int,
        seek_type: str,
        *,
        sequence_number: int | None = None,
        timestamp_sec: int | None = None,
        timestamp_nsec: int = 0,
    ) -> str: ...
    async def get_records(self, shard_id: int, location: str, limit: int = 1000) -> GetRecordsResult: ...
    async def delete(self) -> bool: ...
    async def close(self) -> None: ...


class HttpAccess:
    """A stream behind a v3io Web API endpoint."""

    def __init__(self, target: StreamURL) -> None:
        assert target.endpoint is not None
        self.target = target
        self.url = str(target)
        self.client = V3ioClient(target.endpoint, target.access_key)

    async def create(self, shard_count: int, retention_hours: int) -> bool:
        """CreateStream; False when it existed."""
        return await self.client.create_stream(
            self.target.container, self.target.path, shard_count, retention_hours
        )

    async def describe(self) -> StreamInfo:
        """DescribeStream."""
        return await self.client.describe_stream(self.target.container, self.target.path)

    async def update(self, shard_count: int) -> None:
        """UpdateStream."""
        await self.client.update_stream(self.target.container, self.target.path, shard_count)

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """PutRecords."""
        return await self.client.put_records(self.target.container, self.target.path, records)

    async def seek(
        self,
        shard_id: int,
        seek_type: str,
        *,
        sequence_number: int | None = None,
        timestamp_sec: int | None = None,
        timestamp_nsec: int = 0,
    ) -> str:
        """SeekShard."""
        return await self.client.seek(
            self.target.container,
            self.target.path,
            shard_id,
            seek_type,
            sequence_number=sequence_number,
            timestamp_sec=timestamp_sec,
            timestamp_nsec=timestamp_nsec,
        )

    async def get_records(self, shard_id: int, location: str, limit: int = 1000) -> GetRecordsResult:
        """GetRecords."""
        return await self.client.get_records(
            self.target.container, self.target.path, shard_id, location, limit
        )

    async def delete(self) -> bool:
        """Delete the stream as the v3io client does."""
        return await self.client.delete_stream(self.target.container, self.target.path)

    async def close(self) -> None:
        """Close connections."""
        await self.client.close()


class LocalAccess(LocalTransport):
    """A stream in a local store, in-process."""

    async def seek(
        self,
        shard_id: int,
        seek_type: str,
        *,
        sequence_number: int | None = None,
        timestamp_sec: int | None = None,
        timestamp_nsec: int = 0,
    ) -> str:
        """A location in ``shard_id``."""
        try:
            stream = self.store.open_stream(self.target.container, self.target.path)
            ts = None if timestamp_sec is None else timestamp_sec * 1_000_000_000 + timestamp_nsec
            return stream.seek(shard_id, seek_type.upper(), sequence_number=sequence_number, timestamp_ns=ts)
        except StoreError as exc:
            raise map_store_error(exc, self._what("seek")) from exc

    async def get_records(self, shard_id: int, location: str, limit: int = 1000) -> GetRecordsResult:
        """Records from a location."""
        try:
            stream = self.store.open_stream(self.target.container, self.target.path)
            records, next_seq, behind, msec = stream.read(shard_id, location, limit)
            return GetRecordsResult(
                next_location=stream.encode_location(shard_id, next_seq),
                msec_behind_latest=msec,
                records_behind_latest=behind,
                records=[
                    StreamRecord(
                        sequence_number=seq,
                        data=bytes(data),
                        partition_key=key.decode() if key else None,
                        client_info=bytes(ci) if ci else None,
                        arrival_time_sec=arrival // 1_000_000_000,
                        arrival_time_nsec=arrival % 1_000_000_000,
                    )
                    for seq, arrival, key, ci, data in records
                ],
            )
        except StoreError as exc:
            raise map_store_error(exc, self._what("get records from")) from exc

    async def delete(self) -> bool:
        """Delete the stream."""
        try:
            return self.store.delete_stream(self.target.container, self.target.path)
        except StoreError as exc:
            raise map_store_error(exc, self._what("delete")) from exc


def open_access(url: str, *, access_key: str | None = None) -> StreamAccess:
    """The :class:`StreamAccess` for a stream URL (any of the forms in :mod:`shardline_v3io.urls`).

    Another scheme is opened by its transport factory's ``stream_access(url, access_key=...)``
    when the plugin that registered the scheme gives one (``kinesis://``), so one ``stream`` group
    serves every stream; its ``readable_shards()``, when present, lists the shards ``get`` reads.
    """
    scheme = url.partition("://")[0].lower() if isinstance(url, str) else ""
    if scheme not in _V3IO_SCHEMES:
        from shardline import registered

        opener = getattr(registered("transports").get(scheme), "stream_access", None)
        if callable(opener):
            access: StreamAccess = opener(url, access_key=access_key)
            return access
    target = parse_stream_url(url, access_key=access_key)
    if target.scheme == "local":
        return LocalAccess(target)
    return HttpAccess(target)
