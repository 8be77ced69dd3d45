"""The Kinesis transport: a :class:`shardline.Transport` for ``kinesis://STREAM-NAME`` URLs.

``kinesis://STREAM-NAME?region=REGION&endpoint_url=URL`` — query parameters are transport options
(the same keys as ``[sink.transport]``; giving one in both places is an error). The engine sends its
pre-encoded bodies (:meth:`KinesisTransport.put_records_body`, see :mod:`shardline_kinesis.wire`);
:meth:`describe` lists the open shards and their hash-key ranges (ListShards), so the engine's
ShardMap routes as Kinesis does (MD5 of the key over the ranges).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pybase64
from pydantic import Field
from shardline import (
    ConfigError,
    HashRange,
    PutBodyResult,
    PutFailure,
    PutRecord,
    PutResult,
    StreamExistsError,
    StreamInfo,
    StreamNotFoundError,
    TransportOptions,
)

_STREAM_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_SHARD_ID = re.compile(rb'"ShardId"\s*:\s*"([^"]+)"')
_ALL_WRITTEN = re.compile(rb'\s*\{\s*"FailedRecordCount"\s*:\s*0\s*[,}]')
_SHARD_ID_FIELD = b'"ShardId":"'
SHARD_READ_EVERY_S = 0.5
"""An all-written answer's ShardIds (a new one reveals a reshard) are read at most this often;
an answer with failures is always read in full."""
ERROR_CODE = -1
"""``PutFailure.error_code`` of a Kinesis failure (Kinesis names errors; it has no numeric code)."""


class KinesisOptions(TransportOptions):
    """``[sink.transport]`` (and URL query parameters) of ``kinesis://`` streams."""

    region: str | None = Field(
        None,
        description="AWS region; default: from endpoint_url's host, else the AWS chain (AWS_REGION, profile)",
    )
    endpoint_url: str | None = Field(
        None,
        description="endpoint, e.g. http://127.0.0.1:4567 for kinesalite; default: the region's AWS endpoint",
    )
    profile: str | None = Field(None, description="named profile of the AWS credential chain")
    timeout_s: float = Field(30.0, gt=0, description="seconds per call, connect included")
    max_connections: int = Field(64, ge=1, description="connections kept open to the endpoint")
    aggregate: bool = Field(
        False, description="pack consecutive records of one key into KPL aggregated records"
    )
    create_timeout_s: float = Field(
        120.0, gt=0, description="seconds to wait for a created or resharded stream to be ACTIVE"
    )


def shard_index(shard_id: str) -> int | None:
    """``"shardId-000000000007"`` -> 7 (Kinesis numbers shards in creation order), else None."""
    digits = shard_id.rpartition("-")[2]
    return int(digits) if digits.isdigit() else None


def parse_kinesis_url(url: str, options: Mapping[str, Any] | None = None) -> tuple[str, KinesisOptions]:
    """The stream name and the validated options of a ``kinesis://NAME?...`` URL plus ``options``.

    Raises :class:`ConfigError` for a bad name, an unknown or repeated option, or an
    ``access_key`` (Kinesis takes credentials from the AWS chain only).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "kinesis":
        raise ConfigError(f"{url!r} is not a kinesis:// URL (kinesis://STREAM-NAME?region=...)")
    name = parts.netloc + parts.path.rstrip("/")
    if not _STREAM_NAME.match(name):
        raise ConfigError(
            f"kinesis://{name}: a Kinesis stream name is 1-128 characters of letters, digits, '_', '.' "
            "and '-' (write kinesis://STREAM-NAME?region=REGION)"
        )
    merged: dict[str, Any] = {k: v for k, v in (options or {}).items() if v is not None}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in merged:
            raise ConfigError(f"kinesis://{name}: option {key!r} is given both in the URL and in the options")
        merged[key] = value
    if merged.get("access_key"):
        raise ConfigError(
            f"kinesis://{name}: access_key is not used by Kinesis; credentials come from the AWS chain "
            "(AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles)"
        )
    merged.pop("access_key", None)
    from pydantic import ValidationError

    try:
        return name, KinesisOptions.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise ConfigError(f"kinesis://{name}: {problems} (options of the kinesis:// transport)") from None


def validate(url: str, options: Mapping[str, Any] | None = None) -> None:
    """The config's ``validate`` seam: check the URL and options without connecting."""
    parse_kinesis_url(url, options)


def resolve_region(options: KinesisOptions) -> str:
    """The region: the option, else the endpoint's host, else the AWS chain; ConfigError if none."""
    from shardline_kinesis.client import chain_region, region_from_endpoint

    region = options.region or (region_from_endpoint(options.endpoint_url) if options.endpoint_url else None)
    region = region or chain_region(options.profile)
    if not region:
        raise ConfigError(
            "kinesis://: no AWS region: add ?region=REGION to the URL, set [sink.transport] region, "
            "or set AWS_REGION"
        )
    return region


class KinesisTransport:
    """Sends PutRecords (and ListShards/Create/UpdateShardCount) for one Kinesis stream.

    ``url`` is ``kinesis://STREAM-NAME[?region=..&endpoint_url=..]``; ``options`` as in
    :class:`KinesisOptions`. ``credentials`` (botocore ``Credentials``) overrides the AWS chain.
    The engine reads :attr:`wire` (limits, encoding, outcomes).
    """

    def __init__(self, url: str, *, credentials: Any = None, **options: Any) -> None:
        from shardline_kinesis.client import KinesisClient
        from shardline_kinesis.wire import KinesisWire

        self.stream_name, self.options = parse_kinesis_url(url, options)
        self.url = f"kinesis://{self.stream_name}"
        self.wire = KinesisWire(self.stream_name)
        if self.options.aggregate:
            from shardline_kinesis.aggregation import AggregatingWire

            self.wire = AggregatingWire(self.stream_name)
        self._needles: tuple[tuple[str, bytes], ...] = ()  # the open shards of the last describe()
        self._next_shard_read = 0.0  # when an all-written answer's ShardIds are read next
        self.client = KinesisClient(
            region=resolve_region(self.options),
            endpoint_url=self.options.endpoint_url,
            profile=self.options.profile,
            timeout_s=self.options.timeout_s,
            max_connections=self.options.max_connections,
            credentials=credentials,
        )

    async def describe(self) -> StreamInfo:
        """Open shards (sorted by starting hash key) and retention; StreamNotFoundError when missing.

        A stream caught between closing a parent and opening its children (kinesis-mock shows that
        state) is read again until its open shards cover the hash-key space (a deadline:
        ``create_timeout_s``; then a retryable :class:`KinesisError`).
        """
        from shardline_kinesis.client import poll

        async def covering() -> StreamInfo | None:
            summary = await self.client.describe_stream_summary(self.stream_name)
            shards = await self.client.list_shards(self.stream_name)
            ranges = tuple(
                sorted(
                    (HashRange(s.shard_id, s.start, s.end) for s in shards if s.open), key=lambda r: r.start
                )
            )
            if not _covers(ranges):
                return None
            self._needles = tuple((r.shard_id, _SHARD_ID_FIELD + r.shard_id.encode() + b'"') for r in ranges)
            return StreamInfo(
                shard_count=len(ranges),
                retention_hours=int(summary.get("RetentionPeriodHours", 24)),
                shards=ranges,
            )

        return await poll(
            covering,
            self.options.create_timeout_s,
            lambda: (
                f"kinesis://{self.stream_name}: the open shards do not cover the hash-key space "
                f"after {self.options.create_timeout_s} s (a reshard that does not finish?)"
            ),
            name="ResourceInUseException",
        )

    async def create(self, shard_count: int, retention_hours: int) -> bool:
        """CreateStream and wait until it is ACTIVE; raise retention above 24 h when asked;
        False (nothing changed) when the stream exists."""
        try:
            await self.client.create_stream(self.stream_name, shard_count)
        except StreamExistsError:
            return False
        await self.client.wait_active(self.stream_name, self.options.create_timeout_s)
        if retention_hours > 24:
            await self.client.increase_retention(self.stream_name, retention_hours)
            await self.client.wait_active(self.stream_name, self.options.create_timeout_s)
        return True

    async def update(self, shard_count: int) -> None:
        """UpdateShardCount (UNIFORM_SCALING) to ``shard_count`` and wait until ACTIVE again."""
        from shardline_kinesis.client import poll

        await self.client.update_shard_count(self.stream_name, shard_count)

        async def reached() -> bool | None:  # ACTIVE may still be the state before the update
            # (kinesis-mock): count the open shards too
            summary = await self.client.wait_active(self.stream_name, self.options.create_timeout_s)
            if (
                summary.get("OpenShardCount") == shard_count
                and (await self.describe()).shard_count == shard_count
            ):
                return True
            return None

        await poll(
            reached,
            self.options.create_timeout_s,
            lambda: (
                f"kinesis://{self.stream_name} has not reached {shard_count} open shards after "
                f"{self.options.create_timeout_s} s"
            ),
        )

    async def delete(self) -> bool:
        """DeleteStream; False when it did not exist."""
        try:
            await self.client.delete_stream(self.stream_name)
        except StreamNotFoundError:
            return False
        return True

    async def put_records_body(self, body: bytes, record_count: int) -> PutBodyResult:
        """One pre-encoded PutRecords (a :meth:`KinesisWire.body`); the failed records, and the
        distinct ShardIds the written ones landed on (a new one reveals a reshard).

        An answer that is not JSON, or that does not list one entry per record sent, raises a
        retryable :class:`~shardline_kinesis.client.KinesisError` (the request is sent again: at
        least once), never counts a record written that the answer does not show.
        """
        payload = await self.client.call_raw("PutRecords", body, self.stream_name)
        if _ALL_WRITTEN.match(payload):
            # the common answer. Reading which shards the records landed on costs ~60 us per
            # 500-record answer (4 shards; ~0.12 us/record of a ~1.5 us send, measured against
            # the null endpoint), so it is read at most every SHARD_READ_EVERY_S; in between, one
            # count checks that the answer lists every record
            now = time.monotonic()
            if now < self._next_shard_read and payload.count(_SHARD_ID_FIELD) == record_count:
                return _body_result(record_count, [], None)
            self._next_shard_read = now + SHARD_READ_EVERY_S
            # count each known shard's entries at C speed (a Python step per record here cost
            # ~1.5 us of a ~5 us send); an unknown shard (a reshard) or other formatting falls
            # back to a regex over the answer
            counts = [(sid, payload.count(needle)) for sid, needle in self._needles]
            if counts and sum(c for _, c in counts) == record_count:
                return _body_result(record_count, [], frozenset(sid for sid, c in counts if c))
            landed = _SHARD_ID.findall(payload)
            if len(landed) == record_count:
                return _body_result(record_count, [], frozenset(m.decode() for m in set(landed)))
        try:
            entries = orjson.loads(payload).get("Records", [])
        except (orjson.JSONDecodeError, AttributeError):
            entries = None
        if not isinstance(entries, list) or len(entries) != record_count:
            raise self._bad_answer(record_count, entries)
        failures: list[PutFailure] = []
        shard_ids: set[str] = set()
        for i, r in enumerate(entries):
            code = r.get("ErrorCode")
            if code is None:
                shard_ids.add(r["ShardId"])
            else:
                failures.append(PutFailure(i, ERROR_CODE, str(code), r.get("ErrorMessage") or None))
        return _body_result(record_count, failures, frozenset(shard_ids))

    def _bad_answer(self, sent: int, entries: object) -> Exception:
        from shardline_kinesis.client import KinesisError

        said = f"{len(entries)} entries" if isinstance(entries, list) else "no JSON list of records"
        return KinesisError(
            f"Kinesis PutRecords on stream {self.stream_name!r}: the answer has {said} for {sent} "
            "records sent; the request is sent again",
            name="InvalidResponse",
            status=200,
            retryable=True,
        )

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """One PutRecords of plain records (the slow path; the CLI's ``stream put``).

        A record needs a ``partition_key``; ``shard_id`` N sends the ExplicitHashKey of
        ``shardId-<N>``'s starting hash key. ``client_info`` is refused (Kinesis has none).
        """
        starts: dict[int, int] | None = None
        out: list[bytes] = []
        for rec in records:
            if rec.client_info is not None:
                raise ConfigError("Kinesis records have no ClientInfo")
            if not rec.partition_key:
                raise ConfigError("a Kinesis record needs a partition key (1-256 characters)")
            item: dict[str, Any] = {
                "Data": pybase64.b64encode(rec.data).decode(),
                "PartitionKey": rec.partition_key,
            }
            if rec.shard_id is not None:
                if starts is None:
                    starts = {
                        i: s.start
                        for s in await self.client.list_shards(self.stream_name)
                        if s.open and (i := shard_index(s.shard_id)) is not None
                    }
                if rec.shard_id not in starts:
                    raise ConfigError(
                        f"kinesis://{self.stream_name} has no open shard shardId-{rec.shard_id:012d} "
                        f"(open: {sorted(starts)})"
                    )
                item["ExplicitHashKey"] = str(starts[rec.shard_id])
            out.append(orjson.dumps(item))
        body = self.wire.body([b",".join(out) + b","]) if out else self.wire.body([])
        doc = orjson.loads(await self.client.call_raw("PutRecords", body, self.stream_name))
        results: list[PutResult] = []
        for r in doc.get("Records", []):
            if r.get("ErrorCode") is None:
                results.append(
                    PutResult(shard_id=shard_index(r["ShardId"]), sequence_number=int(r["SequenceNumber"]))
                )
            else:
                results.append(
                    PutResult(
                        error_code=ERROR_CODE,
                        error_message=str(r["ErrorCode"]),
                        error_detail=r.get("ErrorMessage"),
                    )
                )
        return results

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.close()


def _covers(ranges: tuple[HashRange, ...]) -> bool:
    """True when the ranges (sorted) cover 0..2**128-1 without a gap."""
    if not ranges or ranges[0].start != 0 or ranges[-1].end != 2**128 - 1:
        return False
    return all(a.end + 1 == b.start for a, b in itertools.pairwise(ranges))


def _body_result(count: int, failures: list[PutFailure], shard_ids: frozenset[str] | None) -> PutBodyResult:
    return PutBodyResult(count, failures, shard_ids=shard_ids)
