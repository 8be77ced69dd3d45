"""An async client of the Kinesis Data Streams JSON 1.1 API over one aiohttp pool.

Every operation is ``POST /`` with ``X-Amz-Target: Kinesis_20131202.<Op>`` and
``Content-Type: application/x-amz-json-1.1``, signed with AWS Signature Version 4 (service ``kinesis``;
:mod:`shardline_kinesis.sigv4`, equal to botocore's ``SigV4Auth``); errors come back as a 4xx/5xx JSON body
``{"__type": "[prefix#]Name", "message": "..."}``.
(https://docs.aws.amazon.com/kinesis/latest/APIReference/CommonErrors.html,
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)

Credentials come from the standard chain (environment, shared files and profiles, SSO, container
and instance metadata), through ``botocore.session``, and are refreshed when they expire.

PutRecords takes a body the caller already encoded (the engine's joined fragments): measured
against aiobotocore's ``put_records`` for 500-record requests on a local null endpoint, this path
costs a fraction of its client CPU per record (see the connector README, "Send path").
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
from shardline import (
    AccessDeniedError,
    ConfigError,
    ShardlineError,
    StreamExistsError,
    StreamNotFoundError,
    TransportError,
)

from shardline_kinesis.sigv4 import SigV4Signer

T = TypeVar("T")
_TARGET = "Kinesis_20131202."
_CONTENT_TYPE = "application/x-amz-json-1.1"

_THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
    }
)
_ACCESS = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationTokenException",
        "MissingAuthenticationToken",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
_KMS = frozenset(
    {
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "KMSOptInRequired",
    }
)
_REGION_IN_HOST = re.compile(r"(?:^|\.)kinesis(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


class KinesisError(TransportError):
    """A Kinesis call failed. ``name`` is the error's name (``__type`` without its prefix, or
    ``"ConnectionError"``/``"Timeout"``), ``status`` the HTTP status (None without a response)."""

    def __init__(self, message: str, *, name: str, status: int | None, retryable: bool) -> None:
        super().__init__(message, status=status, retryable=retryable)
        self.name = name


class KinesisThrottledError(KinesisError):
    """The stream or the account refused the call for its rate (retry with backoff)."""


class KinesisStreamNotFoundError(StreamNotFoundError):
    """ResourceNotFoundException: the stream does not exist (or is not ACTIVE yet)."""

    name = "ResourceNotFoundException"


class KinesisAccessDeniedError(AccessDeniedError):
    """The credentials were refused (unknown key, bad signature, expired token, no permission)."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class KinesisKMSError(KinesisError):
    """The stream's KMS key cannot be used (disabled, missing, not permitted, invalid state)."""


def error_name(raw: str) -> str:
    """``"com.amazonaws.kinesis.v20131202#ResourceNotFoundException"`` -> ``"ResourceNotFoundException"``
    (also strips a ``":http://..."`` suffix some services add)."""
    return raw.rsplit("#", 1)[-1].split(":", 1)[0]


def region_from_endpoint(endpoint_url: str) -> str | None:
    """The region in an AWS Kinesis endpoint host (``kinesis.eu-west-1.amazonaws.com``), or None."""
    host = aiohttp.client.URL(endpoint_url).host or ""
    m = _REGION_IN_HOST.search(host)
    return m.group(1) if m else None


def map_error(
    stream: str, op: str, status: int, body: bytes, header_type: str | None = None
) -> ShardlineError:
    """The exception for an error answer of ``op`` on ``stream`` (never echoing credentials).

    ResourceNotFound -> :class:`KinesisStreamNotFoundError`; refused credentials ->
    :class:`KinesisAccessDeniedError`; KMS key problems -> :class:`KinesisKMSError` (not retryable);
    ResourceInUse (a reshard or creation under way) -> retryable; throttling, 429 and 5xx ->
    retryable (:class:`KinesisThrottledError` for throttling); other 4xx -> not retryable.
    """
    name, message = "", ""
    try:
        doc = orjson.loads(body) if body else {}
        if isinstance(doc, dict):
            name = error_name(str(doc.get("__type") or ""))
            message = str(doc.get("message") or doc.get("Message") or "")
    except orjson.JSONDecodeError:
        message = body[:200].decode("utf-8", "replace")
    if not name and header_type:
        name = error_name(header_type)
    name = name or f"HTTP {status}"
    said = f": {message}" if message else ""
    where = f"Kinesis {op} on stream {stream!r}"
    if name == "ResourceNotFoundException":
        return KinesisStreamNotFoundError(
            f"{where}: the stream does not exist{said} (create it with `shardline stream create "
            f"kinesis://{stream} --shards N`, or check the region and the account)"
        )
    if name == "ResourceInUseException" and op == "CreateStream":
        return StreamExistsError(f"{where}: the stream already exists{said}")
    if name in _ACCESS or (status == 403 and name not in _KMS):
        return KinesisAccessDeniedError(
            f"{where} was refused ({name}){said}; check the credentials the AWS chain finds "
            "(AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws), their permissions and "
            "the region",
            name=name,
        )
    if name in _KMS:
        return KinesisKMSError(
            f"{where}: the stream's KMS key cannot be used ({name}){said}; check the key's state "
            "and the key policy for these credentials",
            name=name,
            status=status,
            retryable=False,
        )
    if name in _THROTTLING or status == 429:
        return KinesisThrottledError(
            f"{where} was throttled ({name}){said}", name=name, status=status, retryable=True
        )
    if name == "ResourceInUseException" or status >= 500:
        return KinesisError(f"{where} failed ({name}){said}", name=name, status=status, retryable=True)
    return KinesisError(f"{where} was refused ({name}){said}", name=name, status=status, retryable=False)


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard of ListShards: id, hash-key range (inclusive, 128-bit integers), parents, and
    whether it is open (no ``EndingSequenceNumber``)."""

    shard_id: str
    start: int
    end: int
    parent: str | None
    adjacent_parent: str | None
    open: bool


class KinesisClient:
    """Signed JSON calls to one Kinesis endpoint.

    ``region`` is required; ``endpoint_url`` defaults to ``https://kinesis.<region>.amazonaws.com``.
    ``credentials`` (a botocore ``Credentials``) overrides the chain (tests); ``profile`` picks a
    named profile of the chain. ``timeout_s`` bounds every call (seconds, connect included).
    Raises :class:`ConfigError` when the chain finds no credentials.
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        profile: str | None = None,
        timeout_s: float = 30.0,
        max_connections: int = 64,
        credentials: Any = None,
    ) -> None:
        self.region = region
        self.endpoint_url = (endpoint_url or f"https://kinesis.{region}.amazonaws.com").rstrip("/") + "/"
        self.profile = profile
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_connections = max_connections
        self._credentials = credentials
        self._frozen: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._signer = SigV4Signer(self.endpoint_url, region, "kinesis")

    async def _creds(self) -> Any:
        """Frozen credentials, looked up once and refreshed (in a thread) when they expire."""
        if self._credentials is None:
            self._credentials = await asyncio.to_thread(_chain_credentials, self.profile)
        refresh = getattr(self._credentials, "refresh_needed", None)
        if self._frozen is None or (refresh is not None and refresh()):
            self._frozen = await asyncio.to_thread(self._credentials.get_frozen_credentials)
        return self._frozen

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                timeout=self.timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                # Kinesis sets no cookies; aiohttp's jar filtered every request (~10% of its
                # client CPU per request against the null endpoint)
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def sign(self, op: str, body: bytes) -> dict[str, str]:
        """The headers of a signed call of ``op`` with ``body`` (SigV4 over the exact bytes)."""
        creds = await self._creds()
        return self._signer.headers(
            creds, {"Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET + op}, body
        )

    async def call_raw(self, op: str, body: bytes, stream: str) -> bytes:
        """POST one signed call; the raw 200 body. Raises what :func:`map_error` says, or a
        retryable :class:`KinesisError` named ``ConnectionError``/``Timeout``."""
        headers = await self.sign(op, body)
        try:
            async with self._http().post(self.endpoint_url, data=body, headers=headers) as resp:
                payload = await resp.read()
                if resp.status == 200:
                    return payload
                raise map_error(stream, op, resp.status, payload, resp.headers.get("x-amzn-ErrorType"))
        except TimeoutError as exc:
            raise KinesisError(
                f"Kinesis {op} on stream {stream!r} timed out after {self.timeout.total} s",
                name="Timeout",
                status=None,
                retryable=True,
            ) from exc
        except aiohttp.ClientError as exc:
            raise KinesisError(
                f"Kinesis {op} on stream {stream!r} could not reach {self.endpoint_url}: {exc}",
                name="ConnectionError",
                status=None,
                retryable=True,
            ) from exc

    async def call(self, op: str, params: Mapping[str, Any], stream: str) -> dict[str, Any]:
        """One call with a JSON document; its decoded answer (``{}`` for an empty body)."""
        payload = await self.call_raw(op, orjson.dumps(dict(params)), stream)
        doc: dict[str, Any] = orjson.loads(payload) if payload else {}
        return doc

    # -- operations -------------------------------------------------------------------------

    async def put_records_body(self, body: bytes, stream: str) -> dict[str, Any]:
        """PutRecords with a pre-encoded ``{"StreamName":..,"Records":[..]}`` body; the answer
        ``{"FailedRecordCount", "Records": [...]}`` in request order.
        (https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html)"""
        doc: dict[str, Any] = orjson.loads(await self.call_raw("PutRecords", body, stream))
        return doc

    async def put_record(
        self, stream: str, data: bytes, partition_key: str, explicit_hash_key: str | None = None
    ) -> dict[str, Any]:
        """PutRecord: ``{"ShardId", "SequenceNumber"}``."""
        import base64

        params: dict[str, Any] = {
            "StreamName": stream,
            "Data": base64.b64encode(data).decode(),
            "PartitionKey": partition_key,
        }
        if explicit_hash_key is not None:
            params["ExplicitHashKey"] = explicit_hash_key
        return await self.call("PutRecord", params, stream)

    async def list_shards(self, stream: str) -> list[Shard]:
        """Every shard of the stream (open and closed), following ``NextToken``.
        (https://docs.aws.amazon.com/kinesis/latest/APIReference/API_ListShards.html)"""
        shards: list[Shard] = []
        params: dict[str, Any] = {"StreamName": stream}
        while True:
            doc = await self.call("ListShards", params, stream)
            for s in doc.get("Shards", []):
                rng = s["HashKeyRange"]
                shards.append(
                    Shard(
                        shard_id=s["ShardId"],
                        start=int(rng["StartingHashKey"]),
                        end=int(rng["EndingHashKey"]),
                        parent=s.get("ParentShardId"),
                        adjacent_parent=s.get("AdjacentParentShardId"),
                        # kinesis-mock writes "EndingSequenceNumber": null for an open shard
                        open=(s.get("SequenceNumberRange") or {}).get("EndingSequenceNumber") is None,
                    )
                )
            token = doc.get("NextToken")
            if not token:
                return shards
            params = {"NextToken": token}  # with NextToken, StreamName must not be given

    async def describe_stream_summary(self, stream: str) -> dict[str, Any]:
        """DescribeStreamSummary's ``StreamDescriptionSummary`` (StreamStatus, OpenShardCount,
        RetentionPeriodHours, ...)."""
        doc = await self.call("DescribeStreamSummary", {"StreamName": stream}, stream)
        summary: dict[str, Any] = doc["StreamDescriptionSummary"]
        return summary

    async def create_stream(self, stream: str, shard_count: int) -> None:
        """CreateStream (provisioned, ``shard_count`` shards); :class:`StreamExistsError` if it exists."""
        await self.call("CreateStream", {"StreamName": stream, "ShardCount": shard_count}, stream)

    async def increase_retention(self, stream: str, hours: int) -> None:
        """IncreaseStreamRetentionPeriod to ``hours`` (24 is the default, 8760 the maximum)."""
        await self.call(
            "IncreaseStreamRetentionPeriod", {"StreamName": stream, "RetentionPeriodHours": hours}, stream
        )

    async def update_shard_count(self, stream: str, target: int) -> None:
        """UpdateShardCount with ``UNIFORM_SCALING``.
        (https://docs.aws.amazon.com/kinesis/latest/APIReference/API_UpdateShardCount.html)"""
        await self.call(
            "UpdateShardCount",
            {"StreamName": stream, "TargetShardCount": target, "ScalingType": "UNIFORM_SCALING"},
            stream,
        )

    async def split_shard(self, stream: str, shard_id: str, new_starting_hash_key: int) -> None:
        """SplitShard at ``new_starting_hash_key`` (the first hash key of the upper child)."""
        await self.call(
            "SplitShard",
            {
                "StreamName": stream,
                "ShardToSplit": shard_id,
                "NewStartingHashKey": str(new_starting_hash_key),
            },
            stream,
        )

    async def merge_shards(self, stream: str, shard_id: str, adjacent_shard_id: str) -> None:
        """MergeShards of two adjacent open shards."""
        await self.call(
            "MergeShards",
            {"StreamName": stream, "ShardToMerge": shard_id, "AdjacentShardToMerge": adjacent_shard_id},
            stream,
        )

    async def delete_stream(self, stream: str) -> None:
        """DeleteStream (with its consumers)."""
        await self.call("DeleteStream", {"StreamName": stream, "EnforceConsumerDeletion": True}, stream)

    async def get_shard_iterator(
        self,
        stream: str,
        shard_id: str,
        iterator_type: str,
        *,
        sequence_number: str | None = None,
        timestamp: float | None = None,
    ) -> str:
        """GetShardIterator (TRIM_HORIZON, LATEST, AT/AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP)."""
        params: dict[str, Any] = {
            "StreamName": stream,
            "ShardId": shard_id,
            "ShardIteratorType": iterator_type,
        }
        if sequence_number is not None:
            params["StartingSequenceNumber"] = sequence_number
        if timestamp is not None:
            params["Timestamp"] = timestamp
        doc = await self.call("GetShardIterator", params, stream)
        iterator: str = doc["ShardIterator"]
        return iterator

    async def get_records(self, stream: str, iterator: str, limit: int = 10000) -> dict[str, Any]:
        """GetRecords: ``{"Records": [{Data (base64), PartitionKey, SequenceNumber,
        ApproximateArrivalTimestamp}], "NextShardIterator" (absent once a closed shard is read to
        its end), "MillisBehindLatest"}``."""
        return await self.call("GetRecords", {"ShardIterator": iterator, "Limit": limit}, stream)

    async def wait_active(self, stream: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Poll DescribeStreamSummary until the stream is ACTIVE (a deadline, never forever)."""
        summary: dict[str, Any] = {}

        async def active() -> dict[str, Any] | None:
            nonlocal summary
            summary = await self.describe_stream_summary(stream)
            return summary if summary.get("StreamStatus") == "ACTIVE" else None

        return await poll(
            active,
            timeout_s,
            lambda: f"Kinesis stream {stream!r} is still {summary.get('StreamStatus')} after {timeout_s} s",
        )

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def poll(
    ready: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    timed_out: Callable[[], str],
    name: str = "Timeout",
) -> T:
    """Await ``ready()`` until it gives a value (not None), sleeping 50 ms, doubling to 1 s, between
    calls; once ``timeout_s`` have passed, a retryable :class:`KinesisError` named ``name`` with the
    message ``timed_out()`` (a wait with a deadline, never forever)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.05
    while True:
        value = await ready()
        if value is not None:
            return value
        if loop.time() > deadline:
            raise KinesisError(timed_out(), name=name, status=None, retryable=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def _chain_credentials(profile: str | None) -> Any:
    """The standard chain's credentials (botocore), or a ConfigError saying where it looked."""
    import botocore.session
    from botocore.exceptions import BotoCoreError

    try:
        session = botocore.session.Session(profile=profile) if profile else botocore.session.get_session()
        creds = session.get_credentials()
    except BotoCoreError as exc:
        raise ConfigError(f"AWS credentials could not be loaded: {exc}") from exc
    if creds is None:
        raise ConfigError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or configure ~/.aws/credentials (for an emulator any non-empty values do)"
        )
    return creds


def chain_region(profile: str | None) -> str | None:
    """The region the AWS chain configures (AWS_REGION/AWS_DEFAULT_REGION, the profile), or None."""
    import os

    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if env:
        return env
    import botocore.session

    session = botocore.session.Session(profile=profile) if profile else botocore.session.get_session()
    region = session.get_config_variable("region")
    return str(region) if region else None
