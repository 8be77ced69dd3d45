"""An in-memory :class:`~shardline.Transport` with fault injection, for unit tests of engines and plugins.

It behaves like a PutRecords stream (per-shard sequence numbers from 1, an explicit shard wins over
the key, keys placed with :func:`shardline.partitioning.shard_for_key`, round robin otherwise) and
speaks a small protocol of its own, :class:`FakeWire` (``[{"d":"<base64>","k":"key","s":3,"c":
"<base64>"},...]``, limits :data:`FAKE_LIMITS`), so engine tests exercise the wire seam without any
real stream's vocabulary. It *checks every limit*, raising :class:`AssertionError` when a client
sends something the limits forbid (too many records, a body too large, oversized data/key/client
info): a test can assert that nothing invalid was sent with ``transport.violations == []``.

Faults (each a probability; all off by default):

- ``fault_rate``: that fraction of records fail per request, with ``fault_shape``: ``"random"``
  (each record independently), ``"tail"`` (per shard of the request, the number of failed records
  is drawn Binomial(n, rate) and the *last* ones fail, as an append log stops: the expected failed
  fraction is ``rate`` whatever n), or ``"head"`` (the same count, the *first* ones of the shard
  fail and later ones are written: the worst case for per-key order).
- ``throttle_rate``: records refused with ``Throttled`` (not stored).
- ``request_fault_rate``: whole requests raise a retryable 503 :class:`~shardline.TransportError`
  before anything is stored.
- ``unknown_rate``: whole requests are stored, then raise a retryable TransportError as if the
  connection dropped before the answer (the client cannot know they were written: duplicates).
- ``latency_s`` / ``latency_jitter_s``: every answer waits ``latency_s`` plus a uniform random
  part up to ``latency_jitter_s`` (so concurrent requests may complete out of order); the records
  are stored when the wait ends.
- ``down``: while True, every call raises a retryable TransportError (connection refused): an
  outage; set it back to False to end it.
- ``permanent`` is a predicate over a record's Data: records it matches fail with
  ``InvalidRecord`` every time, with the detail
  ``"the record matched FakeTransport.permanent"`` (as a server's ``ErrorDetail``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shardline.arrowbin import b64encode_array
from shardline.errors import AccessDeniedError, StreamNotFoundError, TransportError
from shardline.partitioning import hash_key_of, shard_for_key
from shardline.transport import HashRange, PutBodyResult, PutFailure, PutRecord, PutResult, StreamInfo
from shardline.wire import (
    Outcome,
    Placement,
    RequestOutcome,
    WireLimits,
    b64_fields,
    join_fragments,
    key_fields,
)

FAKE_LIMITS = WireLimits(
    max_records_per_request=1000,
    max_request_bytes=8 * 2**20,
    max_record_bytes=2**20,
    record_counts_key=False,
    max_key_length=256,
    key_length_unit="bytes",
    min_key_length=0,
    key_required=False,
    addressing="shard-id",
    client_info=True,
    max_client_info_bytes=16,
)
"""The fake stream's limits (its own numbers: no real stream's)."""

NO_SUCH_SHARD = "NoSuchShard"
INVALID_RECORD = "InvalidRecord"
THROTTLED = "Throttled"
_LB = pa.large_binary()


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, _LB)


class FakeWire:
    """The fake stream's protocol: a JSON list of ``{"d","k","s","c"}`` objects (see the module docstring)."""

    body_overhead = len(b"[]") - 1

    def __init__(self, limits: WireLimits = FAKE_LIMITS) -> None:
        self.limits = limits

    def fragments(self, placement: Placement) -> pa.Array:
        """``{"d":"<b64>","k":"key","s":<address>,"c":"<b64>"},`` per record, column at a time."""
        p = placement
        pieces: list[pa.Array | pa.Scalar] = [_lb(b'{"d":"'), b64encode_array(p.data), _lb(b'"')]
        if p.key_index is not None:
            assert p.key_json is not None
            pieces.append(key_fields(b',"k":', p.key_json, p.key_index))
        if p.addressed:
            count = p.shard_map.shard_count
            lanes = [b',"s":' + orjson.dumps(p.shard_map.address(lane)) for lane in range(count)]
            pieces.append(pa.array([*lanes, b""], _LB).take(pa.array(np.minimum(p.shards, count))))
        if p.client_info is not None:
            pieces.append(b64_fields(b',"c":"', p.client_info))
        pieces.append(_lb(b"},"))
        return pc.binary_join_element_wise(*pieces, _lb(b""))

    def body(self, parts: Sequence[memoryview | bytes]) -> bytes:
        """``[...]`` from runs of fragments (the last comma dropped)."""
        return join_fragments(b"[", parts, b"]")

    def classify(self, failure: PutFailure) -> Outcome:
        """NoSuchShard: REFRESH, InvalidRecord: PERMANENT, Throttled: THROTTLED, else RETRY."""
        name = failure.error_message
        if name == NO_SUCH_SHARD:
            return Outcome.REFRESH
        if name == INVALID_RECORD:
            return Outcome.PERMANENT
        if name == THROTTLED:
            return Outcome.THROTTLED
        return Outcome.RETRY

    def classify_request(self, error: TransportError) -> RequestOutcome:
        """Missing stream, access denied, non-retryable: FATAL; 429/503: THROTTLED; else UNREACHABLE."""
        if isinstance(error, StreamNotFoundError | AccessDeniedError) or not error.retryable:
            return RequestOutcome.FATAL
        return RequestOutcome.THROTTLED if error.status in (429, 503) else RequestOutcome.UNREACHABLE


@dataclass
class StoredRecord:
    """A record as the fake stream stored it."""

    shard_id: int
    sequence_number: int
    data: bytes
    partition_key: str | None
    client_info: bytes | None


@dataclass
class FakeTransport:
    """In-memory PutRecords stream with limit checks and fault injection (see the module docstring)."""

    url: str = "fake://test/stream"
    shard_count: int | None = 4
    retention_hours: int = 24
    fault_rate: float = 0.0
    fault_shape: str = "random"
    request_fault_rate: float = 0.0
    unknown_rate: float = 0.0
    throttle_rate: float = 0.0
    latency_jitter_s: float = 0.0
    down: bool = False
    permanent: Callable[[bytes], bool] | None = None
    latency_s: float = 0.0
    seed: int | None = 0
    body_path: bool = True
    shards: list[list[StoredRecord]] = field(default_factory=list)
    requests: int = 0
    request_sizes: list[int] = field(default_factory=list)
    max_body_bytes: int = 0
    violations: list[str] = field(default_factory=list)
    closed: bool = False
    wire: FakeWire = field(default_factory=FakeWire)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._rr = 0
        if self.shard_count is not None and not self.shards:
            self.shards = [[] for _ in range(self.shard_count)]
        if not self.body_path:
            self.put_records_body = None  # type: ignore[assignment]

    # -- stream management

    def _outage(self) -> None:
        if self.down:
            raise TransportError("cannot connect: connection refused (injected outage)", retryable=True)

    async def describe(self) -> StreamInfo:
        """Shard count and retention; StreamNotFoundError when the stream was not created."""
        self._outage()
        if self.shard_count is None:
            raise StreamNotFoundError(f"stream {self.url} not found")
        return StreamInfo(self.shard_count, self.retention_hours)

    async def create(self, shard_count: int, retention_hours: int) -> bool:
        """Create the stream; False when it exists."""
        if self.shard_count is not None:
            return False
        self.shard_count = shard_count
        self.retention_hours = retention_hours
        self.shards = [[] for _ in range(shard_count)]
        return True

    async def update(self, shard_count: int) -> None:
        """Grow the stream."""
        assert self.shard_count is not None
        if shard_count < self.shard_count:
            raise TransportError("the shard count can only grow", status=400, retryable=False)
        self.shards.extend([] for _ in range(shard_count - self.shard_count))
        self.shard_count = shard_count

    def grow(self, shard_count: int) -> None:
        """Grow the stream synchronously (from a test, between writes)."""
        assert self.shard_count is not None
        self.shards.extend([] for _ in range(shard_count - self.shard_count))
        self.shard_count = shard_count

    async def close(self) -> None:
        """Mark closed."""
        self.closed = True

    # -- data

    def records(self) -> list[StoredRecord]:
        """Every stored record, shard by shard, in sequence order."""
        return [r for shard in self.shards for r in shard]

    def _violation(self, message: str) -> None:
        self.violations.append(message)
        raise AssertionError(message)

    def _check(self, records: Sequence[PutRecord], body_bytes: int | None) -> None:
        limits = self.wire.limits
        if len(records) > limits.max_records_per_request:
            self._violation(f"request of {len(records)} records")
        if body_bytes is not None and body_bytes > limits.max_request_bytes:
            self._violation(f"request body of {body_bytes} bytes")
        for r in records:
            if len(r.data) > limits.max_record_bytes:
                self._violation(f"data of {len(r.data)} bytes")
            if r.partition_key is not None and len(r.partition_key.encode()) > limits.max_key_length:
                self._violation(f"key of {len(r.partition_key.encode())} bytes")
            if r.client_info is not None and len(r.client_info) > limits.max_client_info_bytes:
                self._violation(f"client info of {len(r.client_info)} bytes")

    def _place(self, r: PutRecord) -> int:
        assert self.shard_count is not None
        if r.shard_id is not None:
            return r.shard_id
        if r.partition_key is not None:
            return shard_for_key(r.partition_key, self.shard_count)
        self._rr = (self._rr + 1) % self.shard_count
        return self._rr

    async def _wait(self) -> None:
        delay = self.latency_s + (
            self._rng.uniform(0, self.latency_jitter_s) if self.latency_jitter_s else 0.0
        )
        if delay:
            await asyncio.sleep(delay)

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """Store records (or fail some, per the fault settings); one result per record."""
        await self._wait()
        return self._put(records, None)

    def _put(self, records: Sequence[PutRecord], body_bytes: int | None) -> list[PutResult]:
        self._outage()
        if self.shard_count is None:
            raise StreamNotFoundError(f"stream {self.url} not found")
        self.requests += 1
        self.request_sizes.append(len(records))
        if body_bytes is not None:
            self.max_body_bytes = max(self.max_body_bytes, body_bytes)
        self._check(records, body_bytes)
        if self.request_fault_rate and self._rng.random() < self.request_fault_rate:
            raise TransportError("503 Service Unavailable (injected)", status=503, retryable=True)
        shards = [self._place(r) for r in records]
        failing = self._failing(shards)
        throttled = {
            i for i in range(len(records)) if self.throttle_rate and self._rng.random() < self.throttle_rate
        }
        unknown = bool(self.unknown_rate) and self._rng.random() < self.unknown_rate
        out: list[PutResult] = []
        for i, (r, s) in enumerate(zip(records, shards, strict=True)):
            if s < 0 or s >= self.shard_count:
                out.append(PutResult(error_code=-1, error_message=NO_SUCH_SHARD))
            elif self.permanent is not None and self.permanent(r.data):
                detail = "the record matched FakeTransport.permanent"  # as a server's ErrorDetail
                out.append(PutResult(error_code=-2, error_message=INVALID_RECORD, error_detail=detail))
            elif i in failing and not unknown:
                out.append(PutResult(error_code=-3, error_message="InternalFailure (injected)"))
            elif i in throttled and not unknown:
                out.append(PutResult(error_code=-4, error_message=THROTTLED))
            else:
                log = self.shards[s]
                seq = len(log) + 1
                log.append(StoredRecord(s, seq, r.data, r.partition_key, r.client_info))
                out.append(PutResult(shard_id=s, sequence_number=seq))
        if unknown:
            raise TransportError("connection reset after the records were stored (injected)", retryable=True)
        return out

    def _failing(self, shards: list[int]) -> set[int]:
        """Indexes of the records to fail with a plain retryable error (see the module docstring)."""
        rate = self.fault_rate
        if not rate:
            return set()
        if self.fault_shape == "random":
            return {i for i in range(len(shards)) if self._rng.random() < rate}
        by_shard: dict[int, list[int]] = {}
        for i, s in enumerate(shards):
            by_shard.setdefault(s, []).append(i)
        out: set[int] = set()
        for idx in by_shard.values():
            m = sum(self._rng.random() < rate for _ in idx)  # Binomial(len(idx), rate)
            if m:
                out.update(idx[len(idx) - m :] if self.fault_shape == "tail" else idx[:m])
        return out

    async def put_records_body(self, body: bytes, record_count: int) -> PutBodyResult:
        """The pre-encoded path: parse the :class:`FakeWire` body, then as :meth:`put_records`."""
        await self._wait()
        recs = [
            PutRecord(
                base64.b64decode(r["d"]),
                r.get("k"),
                r.get("s"),
                base64.b64decode(r["c"]) if "c" in r else None,
            )
            for r in orjson.loads(body)
        ]
        if len(recs) != record_count:
            self._violation(f"record_count {record_count} but the body holds {len(recs)}")
        results = self._put(recs, len(body))
        return PutBodyResult(
            len(results),
            [
                PutFailure(i, r.error_code, r.error_message or "", r.error_detail)
                for i, r in enumerate(results)
                if r.error_code is not None
            ],
        )


HASH_KEY_SPACE = 2**128
"""Hash keys are 128-bit: ``0 .. HASH_KEY_SPACE - 1``."""


@dataclass
class FakeHashRangeTransport:
    """In-memory stream that routes records by MD5 over hash-key ranges, and reshards.

    The hash-range addressing model (:class:`shardline.ShardMap`), for engine tests: a record goes
    to the open shard whose range holds its explicit hash key (the :class:`FakeWire` ``"s"`` field,
    a decimal string) or else ``md5(utf8 key)`` as a 128-bit integer. :meth:`split` and
    :meth:`merge` close shards and open children, as a resharding stream does; closed shards keep
    their records. Body answers report the ids of the shards written to (``shard_ids``) unless
    ``report_shard_ids`` is False. ``fault_rate``: that fraction of records fail with a retryable
    ``InternalFailure`` (not stored). ``latency_s``/``latency_jitter_s`` as :class:`FakeTransport`.
    """

    url: str = "fake-hash-range://test/stream"
    initial_shards: int = 2
    fault_rate: float = 0.0
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    seed: int | None = 0
    report_shard_ids: bool = True
    wire: FakeWire = field(
        default_factory=lambda: FakeWire(dataclasses.replace(FAKE_LIMITS, addressing="hash-range"))
    )
    open_shards: list[HashRange] = field(default_factory=list)
    stored: dict[str, list[StoredRecord]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    describes: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if not self.open_shards:
            step = HASH_KEY_SPACE // self.initial_shards
            for i in range(self.initial_shards):
                end = HASH_KEY_SPACE - 1 if i == self.initial_shards - 1 else (i + 1) * step - 1
                self._open(i * step, end)

    def _open(self, start: int, end: int) -> str:
        shard_id = f"shard-{len(self.epochs):04d}"
        self.epochs[shard_id] = len(self.epochs)
        self.stored[shard_id] = []
        self.open_shards.append(HashRange(shard_id, start, end))
        self.open_shards.sort(key=lambda r: r.start)
        return shard_id

    def _close(self, shard_id: str) -> HashRange:
        found = next(r for r in self.open_shards if r.shard_id == shard_id)
        self.open_shards.remove(found)
        return found

    def split(self, shard_id: str, at: int | None = None) -> tuple[str, str]:
        """Close ``shard_id`` and open two children, split at hash key ``at`` (default: the middle)."""
        parent = self._close(shard_id)
        at = (parent.start + parent.end + 1) // 2 if at is None else at
        return self._open(parent.start, at - 1), self._open(at, parent.end)

    def merge(self, first: str, second: str) -> str:
        """Close two adjacent open shards and open one child covering both ranges."""
        a, b = sorted((self._close(first), self._close(second)), key=lambda r: r.start)
        assert a.end + 1 == b.start, "only adjacent shards merge"
        return self._open(a.start, b.end)

    async def describe(self) -> StreamInfo:
        """The open shards, sorted by starting hash key."""
        self.describes += 1
        return StreamInfo(len(self.open_shards), 24, tuple(self.open_shards))

    async def create(self, shard_count: int, retention_hours: int) -> bool:
        """The stream always exists."""
        return False

    async def update(self, shard_count: int) -> None:
        """Not supported: reshard with :meth:`split` and :meth:`merge`."""
        raise TransportError("reshard with split() and merge()", retryable=False)

    async def close(self) -> None:
        """Mark closed."""
        self.closed = True

    def shard_of(self, hash_key: int) -> HashRange:
        """The open shard whose range holds ``hash_key``."""
        return next(r for r in self.open_shards if r.start <= hash_key <= r.end)

    def records_in_read_order(self) -> list[StoredRecord]:
        """Every stored record as a reader that finishes parents before children sees them per
        key: by shard age (parents are older than their children), then sequence number."""
        ordered = sorted(self.stored, key=self.epochs.__getitem__)
        return [r for shard_id in ordered for r in self.stored[shard_id]]

    async def _wait(self) -> None:
        delay = self.latency_s + (
            self._rng.uniform(0, self.latency_jitter_s) if self.latency_jitter_s else 0.0
        )
        if delay:
            await asyncio.sleep(delay)

    def _put(self, records: Sequence[PutRecord]) -> tuple[list[PutFailure], set[str]]:
        self.requests += 1
        failures: list[PutFailure] = []
        landed: set[str] = set()
        for i, r in enumerate(records):
            if r.hash_key is not None:
                hash_key = int(r.hash_key)
            elif r.partition_key is not None:
                hash_key = hash_key_of(r.partition_key)
            else:
                failures.append(PutFailure(i, -2, INVALID_RECORD, "no key and no explicit hash key"))
                continue
            if self.fault_rate and self._rng.random() < self.fault_rate:
                failures.append(PutFailure(i, -3, "InternalFailure (injected)"))
                continue
            shard = self.shard_of(hash_key)
            log = self.stored[shard.shard_id]
            log.append(StoredRecord(self.epochs[shard.shard_id], len(log) + 1, r.data, r.partition_key, None))
            landed.add(shard.shard_id)
        return failures, landed

    async def put_records(self, records: Sequence[PutRecord]) -> list[PutResult]:
        """Store records (failing some, per ``fault_rate``); one result per record."""
        await self._wait()
        failures, _ = self._put(records)
        failed = {f.index: f for f in failures}
        return [
            PutResult(error_code=failed[i].error_code, error_message=failed[i].error_message)
            if i in failed
            else PutResult(shard_id=0, sequence_number=0)
            for i in range(len(records))
        ]

    async def put_records_body(self, body: bytes, record_count: int) -> PutBodyResult:
        """The pre-encoded path: parse the :class:`FakeWire` body, then as :meth:`put_records`."""
        await self._wait()
        recs = [
            PutRecord(base64.b64decode(r["d"]), r.get("k"), hash_key=r.get("s")) for r in orjson.loads(body)
        ]
        assert len(recs) == record_count, f"record_count {record_count} but the body holds {len(recs)}"
        failures, landed = self._put(recs)
        return PutBodyResult(len(recs), failures, frozenset(landed) if self.report_shard_ids else None)
