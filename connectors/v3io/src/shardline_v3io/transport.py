"""The v3io Web API transport: a :class:`shardline.Transport` over :class:`V3ioClient`.

Registered for the URL schemes ``http``, ``https`` and ``v3io``; the sink engine finds it through
``shardline_register_transports``. It implements the engine's fast path
(:meth:`V3ioTransport.put_records_body`): the engine's pre-encoded PutRecords body goes out as is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from shardline import PutBodyResult, PutFailure, PutRecord, PutResult, StreamInfo, redact_url

from shardline_v3io.client import V3ioClient
from shardline_v3io.errors import record_error_detail
from shardline_v3io.urls import parse_stream_url
from shardline_v3io.wire import V3IO_WIRE, V3ioWire

_ALL_WRITTEN = re.compile(rb'\s*\{\s*"FailedRecordCount"\s*:\s*0\s*[,}]')


class V3ioTransport:
    """Sends PutRecords (and Describe/Create/Update) for one stream of a v3io Web API endpoint.

    ``url`` is ``http(s)://HOST:PORT/CONTAINER/STREAM`` or ``v3io:///CONTAINER/STREAM`` (see
    :func:`shardline_v3io.urls.parse_stream_url`). Options: ``access_key``, ``max_connections``
    (default 64), ``timeout`` (seconds per request, default 60). ``wire`` is the v3io PutRecords
    wire (:mod:`shardline_v3io.wire`).
    """

    wire: V3ioWire = V3IO_WIRE

    def __init__(
        self,
        url: str,
        *,
        access_key: str | None = None,
        max_connections: int = 64,
        timeout: float = 60.0,
        **_ignored: Any,
    ) -> None:
        self.url = redact_url(url)  # shown in logs, dead letters and errors: never the key
        self.location = parse_stream_url(url, access_key=access_key)
        assert self.location.endpoint is not None
        self.client = V3ioClient(
            self.location.endpoint, self.location.access_key, max_connections=max_connections, timeout=timeout
        )

    async def describe(self) -> StreamInfo:
        """Shard count and retention of the stream (StreamNotFoundError when missing)."""
        return await self.client.describe_stream(self.location.container, self.location.path)

    async def create(self, shard_count: int, retention_hours: int) -> bool:
        """Create the stream; False when it already exists."""
        return await self.client.create_stream(
            self.location.container, self.location.path, shard_count, retention_hours
        )

    async def update(self, shard_count: int) -> None:
        """Grow the stream to ``shard_count`` shards."""
        await self.client.update_stream(self.location.container, self.location.path, shard_count)

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """One PutRecords request; one result per record."""
        return await self.client.put_records(self.location.container, self.location.path, records)

    async def put_records_body(self, body: bytes, record_count: int) -> PutBodyResult:
        """One pre-encoded PutRecords request; only the failed records are reported.

        A response that starts with ``{"FailedRecordCount":0`` (the common case) is not parsed further.
        """
        payload = await self.client.put_records_raw(self.location.container, self.location.path, body)
        if _ALL_WRITTEN.match(payload):
            return PutBodyResult(record_count, [])
        doc = orjson.loads(payload)
        if not doc.get("FailedRecordCount"):
            return PutBodyResult(record_count, [])
        failures = [
            PutFailure(i, int(r["ErrorCode"]), str(r.get("ErrorMessage", "")), record_error_detail(r))
            for i, r in enumerate(doc.get("Records", []))
            if r.get("ErrorCode") is not None
        ]
        return PutBodyResult(record_count, failures)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.close()
