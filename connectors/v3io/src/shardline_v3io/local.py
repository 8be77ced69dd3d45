"""``local://DIR/CONTAINER/STREAM``: the server's durable store used in-process, without HTTP.

One :class:`StreamStore` is shared per data directory within a process; the store holds an
exclusive lock on the directory, so a running ``shardline serve`` and a ``local://`` user in another
process cannot write the same files at once (use the server's http:// URL instead).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from shardline import (
    AccessDeniedError,
    PutBodyResult,
    PutFailure,
    PutRecord,
    PutResult,
    StreamInfo,
    StreamNotFoundError,
    TransportError,
    redact_url,
)

from shardline_v3io.errors import record_error_detail
from shardline_v3io.store import StoreError, StreamStore
from shardline_v3io.urls import StreamURL, parse_stream_url
from shardline_v3io.wire import V3IO_WIRE, V3ioWire

_stores: dict[Path, StreamStore] = {}
_stores_lock = threading.Lock()


def shared_store(data_dir: str | Path, *, fsync: bool = False) -> StreamStore:
    """The process-wide :class:`StreamStore` of ``data_dir`` (opened on first use)."""
    key = Path(data_dir).resolve()
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = StreamStore(key, fsync=fsync)
            _stores[key] = store
        return store


def release_store(data_dir: str | Path) -> None:
    """Close the shared store of ``data_dir`` (it reopens on next use)."""
    key = Path(data_dir).resolve()
    with _stores_lock:
        store = _stores.pop(key, None)
    if store is not None:
        store.close()


def map_store_error(exc: StoreError, what: str) -> TransportError:
    """The shardline error for a store error (same mapping as the HTTP client's statuses)."""
    if exc.kind.status == 404:
        return StreamNotFoundError(f"{what}: {exc.detail}")
    if exc.kind.status == 403:
        return AccessDeniedError(f"{what}: {exc.detail}")
    return TransportError(
        f"{what}: {exc.kind.name}: {exc.detail}", status=exc.kind.status, retryable=exc.kind.retryable
    )


class LocalTransport:
    """A :class:`shardline.Transport` writing straight into a local stream store (the v3io wire)."""

    wire: V3ioWire = V3IO_WIRE

    def __init__(self, url: str | StreamURL, *, fsync: bool = False, **_options: Any) -> None:
        self.target = url if isinstance(url, StreamURL) else parse_stream_url(url)
        if self.target.scheme != "local" or self.target.local_dir is None:
            shown = redact_url(str(url))
            raise TransportError(f"LocalTransport needs a local:// URL, got {shown!r}", retryable=False)
        self.url = str(self.target)
        self.store = shared_store(self.target.local_dir, fsync=fsync)

    def _what(self, op: str) -> str:
        return f"{op} {self.url}"

    async def describe(self) -> StreamInfo:
        """Shard count and retention of the stream."""
        try:
            meta = self.store.describe_stream(self.target.container, self.target.path)
        except StoreError as exc:
            raise map_store_error(exc, self._what("describe")) from exc
        return StreamInfo(shard_count=meta.shard_count, retention_hours=meta.retention_hours)

    async def create(self, shard_count: int, retention_hours: int) -> bool:
        """Create the stream; False when it already exists."""
        try:
            return self.store.create_stream(
                self.target.container, self.target.path, shard_count, retention_hours
            )
        except StoreError as exc:
            raise map_store_error(exc, self._what("create")) from exc

    async def update(self, shard_count: int) -> None:
        """Grow the stream to ``shard_count`` shards."""
        try:
            self.store.update_stream(self.target.container, self.target.path, shard_count)
        except StoreError as exc:
            raise map_store_error(exc, self._what("update")) from exc

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """Write one batch; per-record results in order (same rules and limits as the server)."""
        docs: list[dict[str, Any]] = []
        for r in records:
            doc: dict[str, Any] = {"Data": bytes(r.data)}
            if r.partition_key is not None:
                doc["PartitionKey"] = r.partition_key
            if r.shard_id is not None:
                doc["ShardId"] = r.shard_id
            if r.client_info is not None:
                doc["ClientInfo"] = bytes(r.client_info)
            docs.append(doc)
        try:
            stream = self.store.open_stream(self.target.container, self.target.path)
            results, _failed = stream.put_records(docs, encoded=False)
        except StoreError as exc:
            raise map_store_error(exc, self._what("put records to")) from exc
        out = []
        for res in results:
            if "ErrorCode" in res:
                out.append(
                    PutResult(
                        error_code=res["ErrorCode"],
                        error_message=res["ErrorMessage"],
                        error_detail=record_error_detail(res),
                    )
                )
            else:
                out.append(PutResult(shard_id=res["ShardId"], sequence_number=res["SequenceNumber"]))
        return out

    async def put_records_body(self, body: bytes, record_count: int) -> PutBodyResult:
        """Write one pre-encoded PutRecords body (the sink's fast path); report the failed records.

        The body is checked exactly as the server checks it (malformed JSON or bad base64 fail the
        whole request with a non-retryable TransportError).
        """
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            what = self._what("put records to")
            raise TransportError(f"{what}: malformed body: {exc}", retryable=False) from exc
        records = doc.get("Records") if isinstance(doc, dict) else None
        if type(records) is not list or not records:
            raise TransportError(
                f'{self._what("put records to")}: the body must be {{"Records": [...]}} with records',
                retryable=False,
            )
        try:
            stream = self.store.open_stream(self.target.container, self.target.path)
            failed = stream.put_records_failures(records)
        except StoreError as exc:
            raise map_store_error(exc, self._what("put records to")) from exc
        return PutBodyResult(
            len(records), [PutFailure(i, code, name, detail) for i, code, name, detail in failed]
        )

    async def close(self) -> None:
        """Nothing to release per transport (the shared store stays open for the process)."""
