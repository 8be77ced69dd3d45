"""An async client of the v3io Streaming Web API (aiohttp + orjson).

One :class:`V3ioClient` holds one keep-alive connection pool to one endpoint. Status codes map to
shardline errors: 404 -> :class:`StreamNotFoundError`, 403 -> :class:`AccessDeniedError`, other
4xx -> :class:`TransportError` (``retryable=False``, message carrying the server's ErrorMessage),
429/5xx, connection errors and timeouts -> :class:`TransportError` (``retryable=True``).
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from shardline import AccessDeniedError, PutRecord, PutResult, StreamInfo, StreamNotFoundError, TransportError

from shardline_v3io.errors import record_error_detail


@dataclass(slots=True)
class StreamRecord:
    """One record read by GetRecords (Data and ClientInfo decoded from base64)."""

    sequence_number: int
    data: bytes
    partition_key: str | None = None
    client_info: bytes | None = None
    arrival_time_sec: int = 0
    arrival_time_nsec: int = 0


@dataclass(slots=True)
class GetRecordsResult:
    """The answer of one GetRecords call."""

    next_location: str
    msec_behind_latest: int
    records_behind_latest: int
    records: list[StreamRecord] = field(default_factory=list)


def _error_text(status: int, body: bytes) -> str:
    try:
        doc = orjson.loads(body)
        if isinstance(doc, dict) and "ErrorMessage" in doc:
            detail = doc.get("ErrorDetail")
            return f"{doc['ErrorMessage']}" + (f": {detail}" if detail else "")
    except orjson.JSONDecodeError:
        pass
    text = body[:300].decode("utf-8", "replace").strip()
    return text or f"HTTP {status}"


class V3ioClient:
    """Async client of one v3io Web API endpoint (``http://host:port``)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str | None = None,
        *,
        max_connections: int = 64,
        timeout: float = 60.0,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            endpoint = "http://" + endpoint
        self.endpoint = endpoint.rstrip("/")
        self.access_key = access_key
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",)
            )
        return self._session

    def _url(self, container: str, path: str, *, trailing_slash: bool = True) -> str:
        path = path.strip("/")
        url = f"{self.endpoint}/{quote(container, safe='')}/{quote(path, safe='/')}"
        return url + "/" if trailing_slash and path else url

    def _headers(self, function: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if function:
            headers["X-v3io-function"] = function
            headers["Content-Type"] = "application/json"
        if self.access_key:
            headers["X-v3io-session-key"] = self.access_key
        return headers

    async def _request(
        self,
        method: str,
        url: str,
        function: str | None,
        body: bytes | None = None,
        *,
        ok: tuple[int, ...] = (200,),
        what: str = "",
        params: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        session = self._get_session()
        try:
            async with session.request(
                method, url, data=body, headers=self._headers(function), params=params
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except TimeoutError as exc:
            raise TransportError(f"{what or url}: request timed out", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{what or url}: {type(exc).__name__}: {exc}", retryable=True) from exc
        if status in ok:
            return status, payload
        text = _error_text(status, payload)
        if status == 404:
            raise StreamNotFoundError(f"{what or url}: not found ({text})")
        if status == 403:
            raise AccessDeniedError(f"{what or url}: access denied ({text}); check the access key")
        retryable = status == 429 or status >= 500
        raise TransportError(f"{what or url}: HTTP {status}: {text}", status=status, retryable=retryable)

    async def create_stream(
        self, container: str, path: str, shard_count: int, retention_hours: int = 24
    ) -> bool:
        """Create a stream; return False when it already existed (HTTP 409)."""
        body = orjson.dumps({"ShardCount": shard_count, "RetentionPeriodHours": retention_hours})
        status, _ = await self._request(
            "POST",
            self._url(container, path),
            "CreateStream",
            body,
            ok=(200, 204, 409),
            what=f"create stream {container}/{path}",
        )
        return status != 409

    async def describe_stream(self, container: str, path: str) -> StreamInfo:
        """Return the stream's shard count and retention; StreamNotFoundError when missing."""
        _, payload = await self._request(
            "PUT",
            self._url(container, path),
            "DescribeStream",
            None,
            what=f"describe stream {container}/{path}",
        )
        doc = orjson.loads(payload)
        return StreamInfo(
            shard_count=int(doc["ShardCount"]), retention_hours=int(doc.get("RetentionPeriodHours", 0))
        )

    async def update_stream(self, container: str, path: str, shard_count: int) -> None:
        """Grow the stream to ``shard_count`` shards."""
        await self._request(
            "POST",
            self._url(container, path),
            "UpdateStream",
            orjson.dumps({"ShardCount": shard_count}),
            ok=(200, 204),
            what=f"update stream {container}/{path}",
        )

    async def put_records_body(self, container: str, path: str, body: bytes) -> dict[str, Any]:
        """Send one PutRecords request whose JSON ``body`` is already encoded; return the parsed answer."""
        doc: dict[str, Any] = orjson.loads(await self.put_records_raw(container, path, body))
        return doc

    async def put_records_raw(self, container: str, path: str, body: bytes) -> bytes:
        """Send one pre-encoded PutRecords request; return the answer's bytes, unparsed (the sink's
        fast path reads only its head when every record was written)."""
        _, payload = await self._request(
            "POST", self._url(container, path), "PutRecords", body, what=f"put records to {container}/{path}"
        )
        return payload

    async def put_records(self, container: str, path: str, records: Sequence[PutRecord]) -> list[PutResult]:
        """Send ``records`` in one PutRecords request; return one result per record, in order."""
        out: list[dict[str, Any]] = []
        for rec in records:
            item: dict[str, Any] = {"Data": base64.b64encode(rec.data).decode("ascii")}
            if rec.client_info is not None:
                item["ClientInfo"] = base64.b64encode(rec.client_info).decode("ascii")
            if rec.shard_id is not None:
                item["ShardId"] = rec.shard_id
            if rec.partition_key is not None:
                item["PartitionKey"] = rec.partition_key
            out.append(item)
        doc = await self.put_records_body(container, path, orjson.dumps({"Records": out}))
        results = []
        for r in doc.get("Records", []):
            if "ErrorCode" in r and r["ErrorCode"] is not None:
                results.append(
                    PutResult(
                        error_code=int(r["ErrorCode"]),
                        error_message=r.get("ErrorMessage"),
                        error_detail=record_error_detail(r),
                    )
                )
            else:
                results.append(PutResult(shard_id=r.get("ShardId"), sequence_number=r.get("SequenceNumber")))
        return results

    async def seek(
        self,
        container: str,
        path: str,
        shard_id: int,
        seek_type: str,
        *,
        sequence_number: int | None = None,
        timestamp_sec: int | None = None,
        timestamp_nsec: int = 0,
    ) -> str:
        """Return a location in shard ``shard_id``: seek_type EARLIEST, LATEST, SEQUENCE or TIME."""
        body: dict[str, Any] = {"Type": seek_type.upper()}
        if body["Type"] == "SEQUENCE":
            body["StartingSequenceNumber"] = sequence_number
        elif body["Type"] == "TIME":
            body["TimestampSec"] = timestamp_sec
            body["TimestampNSec"] = timestamp_nsec
        _, payload = await self._request(
            "PUT",
            self._url(container, f"{path.strip('/')}/{shard_id}"),
            "SeekShard",
            orjson.dumps(body),
            what=f"seek shard {shard_id} of {container}/{path}",
        )
        return str(orjson.loads(payload)["Location"])

    async def get_records(
        self, container: str, path: str, shard_id: int, location: str, limit: int = 1000
    ) -> GetRecordsResult:
        """Read up to ``limit`` records of shard ``shard_id`` from ``location``."""
        _, payload = await self._request(
            "PUT",
            self._url(container, f"{path.strip('/')}/{shard_id}"),
            "GetRecords",
            orjson.dumps({"Location": location, "Limit": limit}),
            what=f"get records of shard {shard_id} of {container}/{path}",
        )
        doc = orjson.loads(payload)
        records = []
        for r in doc.get("Records") or []:
            ci = r.get("ClientInfo")
            records.append(
                StreamRecord(
                    sequence_number=int(r["SequenceNumber"]),
                    data=binascii.a2b_base64(r.get("Data") or ""),
                    partition_key=r.get("PartitionKey"),
                    client_info=binascii.a2b_base64(ci) if ci else None,
                    arrival_time_sec=int(r.get("ArrivalTimeSec", 0)),
                    arrival_time_nsec=int(r.get("ArrivalTimeNSec", 0)),
                )
            )
        return GetRecordsResult(
            next_location=str(doc.get("NextLocation", location)),
            msec_behind_latest=int(doc.get("MSecBehindLatest", 0)),
            records_behind_latest=int(doc.get("RecordsBehindLatest", 0)),
            records=records,
        )

    async def list_keys(self, container: str, prefix: str) -> list[str] | None:
        """Keys (full paths in the container) of the objects directly under ``prefix``; None when missing."""
        keys: list[str] = []
        marker = ""
        while True:
            params = {"prefix": prefix}
            if marker:
                params["marker"] = marker
            status, payload = await self._request(
                "GET",
                f"{self.endpoint}/{quote(container, safe='')}",
                None,
                None,
                ok=(200, 404),
                params=params,
                what=f"list {container}/{prefix}",
            )
            if status == 404:
                return None
            root = ET.fromstring(payload)
            keys.extend(el.text or "" for el in root.findall("Contents/Key"))
            truncated = (root.findtext("IsTruncated") or "false").lower() == "true"
            marker = root.findtext("NextMarker") or ""
            if not truncated or not marker:
                return keys

    async def delete_stream(self, container: str, path: str) -> bool:
        """Delete a stream as the v3io client does: list its folder, delete each key, then the folder.

        Return False when the stream did not exist.
        """
        path = path.strip("/")
        keys = await self.list_keys(container, path + "/")
        if keys is None:
            return False
        for key in keys:
            await self._request(
                "DELETE",
                self._url(container, key, trailing_slash=False),
                None,
                ok=(200, 204, 404),
                what=f"delete {container}/{key}",
            )
        await self._request(
            "DELETE", self._url(container, path), None, ok=(200, 204, 404), what=f"delete {container}/{path}"
        )
        return True

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> V3ioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
