"""The delivery engine behind :class:`shardline.StreamSink` (runs on one asyncio loop).

Records arrive as :class:`~shardline.records.EncodedBatch`es (already placed on shards and encoded
as PutRecords JSON fragments) and are queued per shard in a **lane**. The dispatcher packs requests
from ready lanes up to every protocol limit and keeps up to ``max_in_flight_requests`` in flight, but
a lane is in at most one in-flight request at a time, and a lane's failed records go back to the
front of its queue: so a shard's records reach the stream in the order they were written.

Per-record failures and per-key order (``ordering``):

``"strict"`` (default)
    A shard starts *unproven*. While unproven, a request carries at most one record per partition
    key of that shard, so no failure pattern can reorder a key. After ``proof_records`` records of
    the shard were accepted in consecutive responses without any failure, the shard is *proven* and
    its records are packed freely. A proven shard that fails records only as a tail (every record
    after the first failed one failed too — how an append log stops) stays proven: retrying the
    tail keeps order. A response that fails a record and accepts a later one of the same shard makes
    the shard unproven again; if it accepted a later record *of the same key*, that key's order was
    broken by the server in that one response: the sink counts it in ``metrics.order_violations``
    and logs a warning. Guarantee: per-key order holds for every key whose shard never fails
    records out of tail order after having been proven healthy; otherwise the breaks are counted.
``"paranoid"``
    Every request carries at most one record per key of each shard, always. Per-key order holds
    under any failure pattern; requests are small when few keys are hot.
``"none"``
    Records are packed freely and a shard may be in several requests at once; retries may reorder.

While a shard must carry at most one record per key (unproven in ``"strict"``, always in
``"paranoid"``), a request takes each key's *earliest* queued record and skips the later records of
keys it already holds (they stay queued behind it): a shard with K keys gets requests of up to K
records, not just the run before the first repeated key.

Failed records go back to the front of their shard's queue, in their original order, and are sent
again at the head of that shard's next request, followed by its new records. A shard whose part of a
request failed as a whole, or that refused most of its recent records (a failure rate weighted by
records, so that a retry of two records failing by chance is not taken for a failing shard), waits
first (capped exponential backoff with jitter, growing while that goes on); when only some of its
records failed the shard works and the retry goes out at once. Throttling — a request failed as
a whole (503, 429, connection errors) or nearly every record of a shard refused — shrinks that
shard's requests (AIMD on the records a request may carry for it: halved, down to 10, grown again
by a quarter after each response without throttling); scattered per-record errors do not. Records
that fail permanently, or still fail ``retry_deadline_s`` after their first failure, are
dead-lettered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from shardline import limits
from shardline.deadletter import DeadLetterWriter, dead_letter_entry
from shardline.errors import (
    AccessDeniedError,
    DeliveryError,
    ShardlineError,
    StreamNotFoundError,
    TransportError,
)
from shardline.metrics import SinkMetrics
from shardline.partitioning import ShardMap
from shardline.plugins import call_observers
from shardline.records import EncodedBatch, encode_body
from shardline.transport import PutBodyResult, PutFailure, PutRecord, Transport, failures_of

log = logging.getLogger("shardline.sink")

ORDERING_MODES = ("strict", "paranoid", "none")

_PERMANENT_ERRORS = (
    "InvalidArgument",
    "TooLarge",
    "ResourceIsnotStream",
    "Permission",
    "ValidationException",
)
_SHARD_RANGE_ERROR = "ShardIDOutOfRange"
_MIN_ALLOWANCE = 10
"""AIMD floor: a shard that keeps refusing most records still gets requests of up to this many."""
_SCAN_FACTOR = 4
_SCAN_SEGMENTS = 256  # and at most this many queue segments (a queue under faults is fragmented)
"""While packing at most one record per key, look this many times the request size into a queue."""


def is_permanent(message: str) -> bool:
    """True when a per-record error name means the record can never be written as it is."""
    return any(name.lower() in message.lower() for name in _PERMANENT_ERRORS)


@dataclass
class EngineOptions:
    """Tuning of the engine (see :class:`shardline.StreamSink` for the meaning of each)."""

    max_in_flight_bytes: int = 64 * 2**20
    max_in_flight_requests: int = 16
    linger_ms: float = 5.0
    retry_deadline_s: float = 300.0
    ordering: str = "strict"
    shard_refresh_s: float = 30.0
    backoff_base_s: float = 0.05
    backoff_max_s: float = 5.0
    proof_records: int = 1000
    max_records_per_request: int = limits.MAX_RECORDS_PER_REQUEST
    max_request_bytes: int = limits.MAX_REQUEST_BODY_BYTES


@dataclass
class _Batch:
    """One submitted batch: acked when ``remaining`` reaches 0 and every earlier batch was acked."""

    seq: int
    enc: EncodedBatch
    remaining: int
    nbytes: int
    records: int
    ack: Callable[[], None] | None


@dataclass(slots=True)
class _Seg:
    """A run of records ``start:end`` of one batch, all of one shard, in write order."""

    batch: _Batch
    start: int
    end: int
    attempt: int = 0
    first_failure: float | None = None
    last_error: str = ""


@dataclass
class _Lane:
    """The ordering lane of one shard: its queue, whether it is in flight, backoff and AIMD state."""

    shard: int
    queue: collections.deque[_Seg] = field(default_factory=collections.deque)
    pending: int = 0
    busy: int = 0
    not_before: float = 0.0
    oldest: float = 0.0
    fail_streak: int = 0
    fail_rate: float = 0.0  # share of the shard's recent records refused (weighted by records)
    allowance: int = limits.MAX_RECORDS_PER_REQUEST
    proven: bool = False
    clean_records: int = 0


def _runs(positions: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Sorted positions as runs of consecutive ones: ``[3, 4, 5, 9]`` -> ``[(3, 6), (9, 10)]``."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.concatenate(([0], breaks))].tolist()
    ends = (positions[np.append(breaks - 1, len(positions) - 1)] + 1).tolist()
    return list(zip(starts, ends, strict=True))


def _note_failures(lane: _Lane, failed: int, sent: int) -> None:
    """Move the lane's failure rate toward ``failed / sent``, by more the more records were sent."""
    if sent > 0:
        lane.fail_rate += (1.0 - 0.9**sent) * (failed / sent - lane.fail_rate)


@dataclass
class _Request:
    """One PutRecords request: pieces of lanes' queues, in body order."""

    pieces: list[tuple[_Lane, _Seg]]
    count: int
    body_bytes: int


class Engine:
    """Lanes, dispatcher, retries, acks and shard growth for one stream (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        options: EngineOptions,
        dead_letters: DeadLetterWriter,
        metrics: SinkMetrics,
        *,
        create: dict[str, int] | None = None,
    ) -> None:
        if options.ordering not in ORDERING_MODES:
            raise ShardlineError(
                f"ordering={options.ordering!r} is not a mode; choose one of {', '.join(ORDERING_MODES)}"
            )
        self.transport = transport
        self.options = options
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.create = create
        self.stream = getattr(transport, "url", repr(transport))
        self.shard_map: ShardMap | None = None
        self._lanes: dict[int, _Lane] = {}
        self._batches: collections.deque[_Batch] = collections.deque()
        self._seq = 0
        self._bytes = 0
        self._request_bytes = 0
        self._in_flight = 0
        self._growing = False
        self._closing = False
        self._error: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._refresh_now: asyncio.Event | None = None
        self._refresh_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._flushing = 0
        self._body_path = callable(getattr(transport, "put_records_body", None))
        self._warned_violation = False

    @property
    def shard_count(self) -> int:
        """The shard count records are placed for (0 before :meth:`start`)."""
        return self.shard_map.shard_count if self.shard_map is not None else 0

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Learn the shard count (creating the stream if asked) and start the dispatcher."""
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._refresh_now = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        deadline = time.monotonic() + self.options.retry_deadline_s
        try:
            info = await self._at_start("describe", self.transport.describe, deadline)
        except StreamNotFoundError:
            if not self.create:
                raise StreamNotFoundError(
                    f"stream {self.stream} does not exist; create it first (e.g. `shardline stream create`) "
                    f"or pass create={{'shards': N, 'retention_hours': H}} to the sink"
                ) from None
            shards = int(self.create.get("shards", 1))
            hours = int(self.create.get("retention_hours", 24))
            await self._at_start("create", lambda: self.transport.create(shards, hours), deadline)
            info = await self._at_start("describe", self.transport.describe, deadline)
        self.shard_map = ShardMap(info.shard_count)
        self.metrics.shard_count = info.shard_count
        self._tasks = [asyncio.create_task(self._dispatch_loop()), asyncio.create_task(self._refresh_loop())]

    async def _at_start(self, what: str, call: Callable[[], Any], deadline: float) -> Any:
        """Run a start-up call, retrying retryable :class:`TransportError`s until ``deadline``.

        Same capped exponential backoff with jitter as records get; the last error is raised when the
        next wait would pass the deadline (``retry_deadline_s`` after :meth:`start` began).
        """
        attempt = 0
        while True:
            try:
                return await call()
            except TransportError as exc:
                if not exc.retryable:
                    raise
                base = min(self.options.backoff_max_s, self.options.backoff_base_s * 2 ** min(attempt, 30))
                delay = base * random.uniform(0.5, 1.0)
                if time.monotonic() + delay > deadline:
                    raise
                attempt += 1
                log.warning(
                    "%s of %s failed (%s); retry %d in %.2f s", what, self.stream, exc, attempt, delay
                )
                await asyncio.sleep(delay)

    def check(self) -> None:
        """Raise the error that stopped the engine, if any."""
        if self._error is not None:
            raise DeliveryError(f"the sink stopped: {self._error}") from self._error

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            log.error("sink for %s stopped: %s", self.stream, exc)
        self._notify()

    def _notify(self) -> None:
        """Wake the dispatcher and everyone waiting for a change of state."""
        assert self._wake is not None and self._changed is not None
        self._wake.set()
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changes(self) -> None:
        assert self._changed is not None
        await self._changed.wait()

    # ------------------------------------------------------------------ intake

    async def submit(
        self, enc: EncodedBatch, dead: list[tuple[dict[str, Any], str]], ack: Callable[[], None] | None
    ) -> bool:
        """Queue a placed batch. Blocks while the byte cap is reached or the stream is growing.

        Returns False (queuing nothing) when ``enc`` was placed for another shard count than the
        current one: the caller must place the batch again for :attr:`shard_count`.
        """
        assert self._wake is not None
        nbytes = enc.nbytes
        while self._error is None and (
            self._growing or (self._bytes > 0 and self._reserved(nbytes) > self.options.max_in_flight_bytes)
        ):
            await self._changes()
        self.check()
        if enc.shard_count != self.shard_count and enc.num_records:
            return False
        self._bytes += nbytes
        self.metrics.buffered_bytes = self._bytes
        self._seq += 1
        batch = _Batch(self._seq, enc, enc.num_records, nbytes, enc.num_records + len(dead), ack)
        self.metrics.records_in += batch.records
        self._batches.append(batch)
        for record, reason in dead:
            self._dead_letter(record, reason, reason)
        now = time.monotonic()
        for shard, (start, end) in enc.shard_bounds.items():
            lane = self._lanes.get(shard)
            if lane is None:
                lane = self._lanes[shard] = _Lane(shard, allowance=self.options.max_records_per_request)
            if not lane.pending:
                lane.oldest = now
            lane.queue.append(_Seg(batch, start, end))
            lane.pending += end - start
        self._progress()
        self._wake.set()
        return True

    def _reserved(self, nbytes: int) -> int:
        """Memory the buffer may need with ``nbytes`` more queued: the encoded records plus the
        request bodies they may become while in flight (copies, at most one per queued byte, and at
        most ``max_in_flight_requests`` requests of ``max_request_bytes``). Admitting a batch only
        while this fits ``max_in_flight_bytes`` keeps records and bodies together under the cap.
        """
        queued = self._bytes + nbytes
        bodies = min(queued, self.options.max_in_flight_requests * self.options.max_request_bytes)
        return queued + bodies

    # ------------------------------------------------------------------ acks

    def _progress(self) -> None:
        if self.dead_letters.pending:  # dead letters are on disk before an ack can pass them
            try:
                self.dead_letters.flush()
            except OSError as exc:
                self._fail(
                    DeliveryError(f"cannot write the dead-letter file {self.dead_letters.path}: {exc}")
                )
                return  # no ack may pass dead letters that are not on disk
        released = False
        while self._batches and self._batches[0].remaining == 0:
            batch = self._batches.popleft()
            self._bytes -= batch.nbytes
            released = True
            self.metrics.batches_acked += 1
            if batch.ack is not None:
                try:
                    batch.ack()
                except Exception:
                    log.exception("an ack callback raised; delivery goes on")
            call_observers(
                "shardline_on_batch_acked", stream=self.stream, records=batch.records, nbytes=batch.nbytes
            )
        if released:
            self.metrics.buffered_bytes = self._bytes
            self._notify()

    def _done(self, batch: _Batch, n: int) -> None:
        batch.remaining -= n

    # ------------------------------------------------------------------ dead letters

    def _dead_letter(self, record: dict[str, Any], error: str, reason: str) -> None:
        entry = dead_letter_entry(self.stream, record, error, reason)
        try:
            self.dead_letters.write(entry)
        except OSError as exc:
            self._fail(DeliveryError(f"cannot write the dead-letter file {self.dead_letters.path}: {exc}"))
        self.metrics.dead_letters += 1
        call_observers("shardline_on_dead_letter", stream=self.stream, record=entry, reason=reason)

    def dead_letter_records(self, records: Sequence[dict[str, Any]], reason: str) -> None:
        """Dead-letter records from outside the engine (a source's rows); durable when it returns."""
        for record in records:
            self._dead_letter(record, str(record.get("error") or reason), reason)
        try:
            self.dead_letters.flush()
        except OSError as exc:
            self._fail(DeliveryError(f"cannot write the dead-letter file {self.dead_letters.path}: {exc}"))

    def _dead_letter_range(self, seg: _Seg, start: int, end: int, error: str, reason: str) -> None:
        for i in range(start, end):
            self._dead_letter(seg.batch.enc.record(i), error, reason)
        self._done(seg.batch, end - start)

    # ------------------------------------------------------------------ dispatch

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        try:
            while True:
                now = time.monotonic()
                delay = self._dispatch(now)
                if self._closing and not self._batches and not self._in_flight:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not hang the writers
            log.exception("sink dispatcher crashed")
            self._fail(exc)

    def _dispatch(self, now: float) -> float | None:
        """Start every request that may start now; return how long to sleep before looking again."""
        opts = self.options
        linger = opts.linger_ms / 1000.0
        urgent = self._flushing > 0 or self._growing or self._closing
        wait: float | None = None
        while self._in_flight < opts.max_in_flight_requests and self._error is None:
            ready: list[_Lane] = []
            due = False
            for lane in self._lanes.values():
                if not lane.pending or (lane.busy and opts.ordering != "none"):
                    continue
                if lane.not_before > now:
                    d = lane.not_before - now
                    wait = d if wait is None else min(wait, d)
                    continue
                ready.append(lane)
                if urgent or lane.pending >= lane.allowance or now - lane.oldest >= linger:
                    due = True
                else:
                    d = lane.oldest + linger - now
                    wait = d if wait is None else min(wait, d)
            if not ready or not due:
                break
            ready.sort(key=lambda ln: ln.oldest)
            request = self._build(ready)
            if request is None:
                break
            self._in_flight += 1
            self.metrics.in_flight_requests = self._in_flight
            task = asyncio.create_task(self._send(request))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return wait

    def _build(self, lanes: list[_Lane]) -> _Request | None:
        opts = self.options
        room_records = opts.max_records_per_request
        room_bytes = opts.max_request_bytes - limits.BODY_OVERHEAD + 1  # the last comma is dropped
        pieces: list[tuple[_Lane, _Seg]] = []
        count = 0
        body = limits.BODY_OVERHEAD - 1
        for lane in lanes:
            if room_records <= 0 or room_bytes <= 0:
                break
            safe = opts.ordering == "paranoid" or (opts.ordering == "strict" and not lane.proven)
            want = min(room_records, lane.allowance)
            taken = 0
            if safe:
                taken, used = self._take_distinct(lane, pieces, want, room_bytes)
                room_records -= taken
                room_bytes -= used
                body += used
            while not safe and lane.queue and taken < want:
                seg = lane.queue[0]
                enc = seg.batch.enc
                offs = enc.offsets
                avail = min(seg.end - seg.start, want - taken)
                base = offs[seg.start]
                rel = offs[seg.start + 1 : seg.start + avail + 1] - base
                k = min(avail, int(np.searchsorted(rel, room_bytes, side="right")))
                stop = k < avail
                if k > 0:
                    nbytes = int(offs[seg.start + k] - base)
                    pieces.append(
                        (
                            lane,
                            _Seg(
                                seg.batch,
                                seg.start,
                                seg.start + k,
                                seg.attempt,
                                seg.first_failure,
                                seg.last_error,
                            ),
                        )
                    )
                    if k == seg.end - seg.start:
                        lane.queue.popleft()
                    else:
                        seg.start += k
                    taken += k
                    room_records -= k
                    room_bytes -= nbytes
                    body += nbytes
                if stop or k <= 0:
                    break
            if taken:
                lane.pending -= taken
                lane.busy += 1
                self.metrics.shard_in_flight[lane.shard] = (
                    self.metrics.shard_in_flight.get(lane.shard, 0) + taken
                )
                if lane.pending:
                    lane.oldest = time.monotonic()
                count += taken
        if not pieces:
            return None
        return _Request(pieces, count, body)

    def _take_distinct(
        self, lane: _Lane, pieces: list[tuple[_Lane, _Seg]], want: int, room_bytes: int
    ) -> tuple[int, int]:
        """Take up to ``want`` records of ``lane``, at most one per key: each key's earliest queued one.

        Records of a key already taken are *skipped* (they stay queued, in order, behind the taken one
        of their key), so a request is not cut short at the first repeated key: with K keys on a shard it
        carries up to K records. Scans at most ``_SCAN_FACTOR`` times the request size, and at most
        ``_SCAN_SEGMENTS`` queue segments (retries split a queue into many small ones). Stops at the
        first record that does not fit ``room_bytes`` (skipping it could let a later record of its key
        go first). Appends the taken runs to ``pieces``; returns (records taken, body bytes used).

        The scan window (across the queue's segments) is handled in one numpy pass (the first
        occurrence of every key), so the cost has no Python step per scanned record.
        """
        budget = max(want, 1) * _SCAN_FACTOR
        queue = lane.queue
        window: list[tuple[_Seg, int]] = []  # (segment, records of it in the scan window)
        hashes: list[npt.NDArray[np.uint64]] = []
        starts: list[npt.NDArray[np.int64]] = []  # each record's fragment start and end offsets
        ends: list[npt.NDArray[np.int64]] = []
        scanned = 0
        while queue and scanned < budget and len(window) < _SCAN_SEGMENTS:
            seg = queue.popleft()
            a = seg.start
            b = min(seg.end, a + budget - scanned)
            enc = seg.batch.enc
            window.append((seg, b - a))
            hashes.append(enc.key_hashes[a:b])
            starts.append(enc.offsets[a:b])
            ends.append(enc.offsets[a + 1 : b + 1])
            scanned += b - a
        if not window:
            return 0, 0
        _, first_at = np.unique(np.concatenate(hashes), return_index=True)  # each key's earliest
        take = np.sort(first_at)[:want]
        taken_sizes = np.concatenate(ends)[take] - np.concatenate(starts)[take]
        fits = int(np.searchsorted(np.cumsum(taken_sizes), room_bytes, side="right"))
        take = take[:fits]  # the first record that does not fit stays, and so does every later one
        used = int(taken_sizes[:fits].sum())
        # hand out the window segment by segment: runs of taken records go to the request; what lies
        # between them and after the last one stays queued, in order
        keep: list[_Seg] = []
        runs = _runs(take)
        r = 0
        base = 0
        for seg, n in window:
            first = seg.start
            seg_end = base + n  # this segment's part of the window, in window positions
            pos = base
            while r < len(runs) and runs[r][0] < seg_end:
                run_start, run_end = runs[r]
                cut = min(run_end, seg_end)
                if run_start > pos:
                    keep.append(self._part(seg, first + pos - base, first + run_start - base))
                pieces.append((lane, self._part(seg, first + run_start - base, first + cut - base)))
                pos = cut
                if cut < run_end:
                    runs[r] = (cut, run_end)  # the run goes on in the next segment
                    break
                r += 1
            if pos < seg_end or n < seg.end - seg.start:
                seg.start = first + pos - base
                keep.append(seg)
            base = seg_end
        queue.extendleft(reversed(keep))
        return len(take), used

    @staticmethod
    def _part(seg: _Seg, start: int, end: int) -> _Seg:
        """Records ``start:end`` of ``seg``, with its retry state."""
        return _Seg(seg.batch, start, end, seg.attempt, seg.first_failure, seg.last_error)

    # ------------------------------------------------------------------ sending

    def _records(self, request: _Request) -> list[PutRecord]:
        """The request's records as :class:`PutRecord`s, for transports without the body path."""
        out: list[PutRecord] = []
        for _lane, seg in request.pieces:
            enc = seg.batch.enc
            n = seg.end - seg.start
            datas = enc.data.slice(seg.start, n).to_pylist()
            shards: list[int | None] = enc.shards[seg.start : seg.end].tolist()
            if not enc.send_shard_id:
                shards = [None] * n
            keys: list[str | None] = [None] * n
            if enc.key_index is not None:
                values = enc.key_list()
                keys = [values[k] if k >= 0 else None for k in enc.key_index[seg.start : seg.end].tolist()]
            infos: list[bytes | None] = [None] * n
            if enc.client_info is not None:
                infos = enc.client_info.slice(seg.start, n).to_pylist()
            out.extend(map(PutRecord, datas, keys, shards, infos))
        return out

    async def _send(self, request: _Request) -> None:
        failures: list[PutFailure] | None = None
        whole_error: str | None = None
        permanent_error: str | None = None
        self._request_bytes += request.body_bytes
        self.metrics.request_bytes = self._request_bytes
        try:
            self.metrics.requests += 1
            if self._body_path:
                body = encode_body(
                    [
                        seg.batch.enc.fragments[
                            seg.batch.enc.offsets[seg.start] : seg.batch.enc.offsets[seg.end]
                        ]
                        for _lane, seg in request.pieces
                    ]
                )
                result: PutBodyResult = await self.transport.put_records_body(body, request.count)  # type: ignore[attr-defined]
                failures = result.failures
            else:
                results = await self.transport.put_records(self._records(request))
                if len(results) != request.count:
                    raise TransportError(
                        f"the transport returned {len(results)} results for {request.count} records"
                    )
                failures = failures_of(results)
        except (StreamNotFoundError, AccessDeniedError) as exc:
            self._fail(exc)
        except TransportError as exc:
            if exc.retryable:
                whole_error = f"{type(exc).__name__}: {exc}"
            else:
                permanent_error = f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            whole_error = "cancelled"
            raise
        except Exception as exc:  # connection errors a transport did not wrap
            whole_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._in_flight -= 1
            self.metrics.in_flight_requests = self._in_flight
            self._request_bytes -= request.body_bytes
            self.metrics.request_bytes = self._request_bytes
            try:
                self._settle(request, failures, whole_error, permanent_error)
            except Exception as exc:
                log.exception("sink failed to settle a response")
                self._fail(exc)
            self._progress()
            self._notify()

    def _settle(
        self,
        request: _Request,
        failures: list[PutFailure] | None,
        whole_error: str | None,
        permanent_error: str | None,
    ) -> None:
        now = time.monotonic()
        if failures is None and whole_error is None and permanent_error is None:
            # fatal error: leave the records unacked, release the lanes
            for lane, seg in request.pieces:
                lane.busy -= 1
                self._in_flight_done(lane, seg.end - seg.start)
            return
        if whole_error is not None or permanent_error is not None:
            self.metrics.failed_requests += 1
        elif not failures:
            self._settle_clean(request)
            return
        # group the request's pieces by lane, keeping order
        by_lane: dict[int, list[_Seg]] = {}
        lanes: dict[int, _Lane] = {}
        for lane, seg in request.pieces:
            by_lane.setdefault(lane.shard, []).append(seg)
            lanes[lane.shard] = lane
        fail_at: dict[int, PutFailure] = {}
        if failures:
            fail_at = {f.index: f for f in failures}
        index = 0
        for shard, segs in by_lane.items():
            lane = lanes[shard]
            lane.busy -= 1
            n_lane = sum(s.end - s.start for s in segs)
            self._in_flight_done(lane, n_lane)
            retry: list[_Seg] = []
            first_retry_pos: int | None = None
            succeeded_after_retry = False
            failed_keys: set[int] = set()
            violations = 0
            retry_error = ""
            shard_range = False
            pos = 0
            for seg in segs:
                enc = seg.batch.enc
                ok = 0
                ok_bytes = 0
                run_start: int | None = None
                for i in range(seg.start, seg.end):
                    f: PutFailure | None
                    if whole_error is not None:
                        f = PutFailure(index, -1, whole_error)
                    elif permanent_error is not None:
                        f = PutFailure(index, -1, permanent_error)
                    else:
                        f = fail_at.get(index)
                    index += 1
                    retry_this = False
                    if f is None:
                        ok += 1
                        ok_bytes += int(enc.data_offsets[i + 1] - enc.data_offsets[i])
                        if first_retry_pos is not None:
                            succeeded_after_retry = True
                            if int(enc.key_hashes[i]) in failed_keys:
                                violations += 1
                                failed_keys.discard(int(enc.key_hashes[i]))
                    else:
                        message = f.error_message or f"error {f.error_code}"
                        if permanent_error is not None or (whole_error is None and is_permanent(message)):
                            self._dead_letter(enc.record(i), message, "rejected by the stream")
                            self._done(seg.batch, 1)
                        elif now - (seg.first_failure or now) > self.options.retry_deadline_s:
                            self._dead_letter(
                                enc.record(i),
                                message,
                                f"retry deadline of {self.options.retry_deadline_s:g} s exceeded "
                                f"after {seg.attempt + 1} attempts",
                            )
                            self._done(seg.batch, 1)
                        else:
                            retry_this = True
                            retry_error = message
                            if _SHARD_RANGE_ERROR.lower() in message.lower():
                                shard_range = True
                            if first_retry_pos is None:
                                first_retry_pos = pos
                            failed_keys.add(int(enc.key_hashes[i]))
                    if retry_this:
                        if run_start is None:
                            run_start = i
                    elif run_start is not None:
                        retry.append(
                            _Seg(
                                seg.batch,
                                run_start,
                                i,
                                seg.attempt + 1,
                                seg.first_failure or now,
                                retry_error,
                            )
                        )
                        run_start = None
                    pos += 1
                if run_start is not None:
                    retry.append(
                        _Seg(
                            seg.batch,
                            run_start,
                            seg.end,
                            seg.attempt + 1,
                            seg.first_failure or now,
                            retry_error,
                        )
                    )
                if ok:
                    self._done(seg.batch, ok)
                    self.metrics.records += ok
                    self.metrics.shard_records[shard] = self.metrics.shard_records.get(shard, 0) + ok
                    self.metrics.bytes += ok_bytes
            n_retry = sum(s.end - s.start for s in retry)
            if n_retry:
                lane.queue.extendleft(reversed(retry))
                if lane.pending == 0 or not lane.oldest:
                    lane.oldest = now
                else:
                    lane.oldest = min(lane.oldest, now)
                lane.pending += n_retry
                _note_failures(lane, n_retry, n_lane)
                if whole_error is not None or lane.fail_rate >= 0.5:
                    # the shard refused its whole part, or most of its recent records: back off
                    # (capped, growing, jittered). The rate is weighted by records, so a retry of a
                    # few records failing by chance under scattered faults does not stall the shard.
                    lane.fail_streak += 1
                    exponent = min(lane.fail_streak - 1, 30)
                    base = min(self.options.backoff_max_s, self.options.backoff_base_s * 2**exponent)
                    lane.not_before = now + base * random.uniform(0.5, 1.0)
                else:
                    # a few records failed while most were written: the shard works, retry them at once
                    # (at the front of the next request, followed by new records)
                    lane.fail_streak = 0
                if whole_error is not None or (n_lane >= _MIN_ALLOWANCE and n_retry * 10 >= n_lane * 9):
                    # throttled (a failed request, e.g. 503/429, or nearly every record refused): send
                    # the shard less at once. Scattered per-record errors do not shrink requests.
                    lane.allowance = max(_MIN_ALLOWANCE, lane.allowance // 2)
                else:
                    lane.allowance = min(
                        self.options.max_records_per_request, lane.allowance + max(10, lane.allowance // 4)
                    )
                self.metrics.retries += n_retry
                call_observers(
                    "shardline_on_retry",
                    stream=self.stream,
                    shard_id=shard,
                    records=n_retry,
                    error=retry_error,
                    attempt=max(s.attempt for s in retry),
                )
                if succeeded_after_retry:
                    lane.proven = False
                    lane.clean_records = 0
                elif not lane.proven:
                    lane.clean_records = 0
                if shard_range and self._refresh_now is not None:
                    self._refresh_now.set()
            else:
                lane.fail_streak = 0
                lane.allowance = min(
                    self.options.max_records_per_request, lane.allowance + max(10, lane.allowance // 4)
                )
                if not lane.proven:
                    lane.clean_records += n_lane
                    if lane.clean_records >= self.options.proof_records:
                        lane.proven = True
            self.metrics.shard_allowance[shard] = lane.allowance
            if violations and self.options.ordering != "none":
                self.metrics.order_violations += violations
                if not self._warned_violation:
                    self._warned_violation = True
                    log.warning(
                        "the stream failed a record of shard %d and accepted a later record of the same key "
                        "in one response: that key's order is broken (counted in metrics.order_violations; "
                        "use ordering='paranoid' to rule this out)",
                        shard,
                    )

    def _settle_clean(self, request: _Request) -> None:
        counted: dict[int, int] = {}
        lanes: dict[int, _Lane] = {}
        for lane, seg in request.pieces:
            n = seg.end - seg.start
            enc = seg.batch.enc
            self._done(seg.batch, n)
            self.metrics.bytes += int(enc.data_offsets[seg.end] - enc.data_offsets[seg.start])
            counted[lane.shard] = counted.get(lane.shard, 0) + n
            lanes[lane.shard] = lane
        self.metrics.records += request.count
        for shard, n in counted.items():
            lane = lanes[shard]
            lane.busy -= 1
            self._in_flight_done(lane, n)
            self.metrics.shard_records[shard] = self.metrics.shard_records.get(shard, 0) + n
            lane.fail_streak = 0
            _note_failures(lane, 0, n)
            if lane.allowance < self.options.max_records_per_request:
                lane.allowance = min(
                    self.options.max_records_per_request, lane.allowance + max(10, lane.allowance // 4)
                )
                self.metrics.shard_allowance[shard] = lane.allowance
            if not lane.proven:
                lane.clean_records += n
                if lane.clean_records >= self.options.proof_records:
                    lane.proven = True

    def _in_flight_done(self, lane: _Lane, n: int) -> None:
        left = self.metrics.shard_in_flight.get(lane.shard, 0) - n
        self.metrics.shard_in_flight[lane.shard] = max(left, 0)

    # ------------------------------------------------------------------ shard growth

    async def _refresh_loop(self) -> None:
        assert self._refresh_now is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), timeout=self.options.shard_refresh_s)
            self._refresh_now.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except StreamNotFoundError as exc:
                self._fail(exc)
                return
            except Exception as exc:
                log.warning("could not refresh the shard count of %s: %s", self.stream, exc)

    async def refresh(self) -> None:
        """Describe the stream now; if it grew, drain what is queued and in flight, then swap the count."""
        async with self._refresh_lock:
            await self._refresh()

    async def _refresh(self) -> None:
        info = await self.transport.describe()
        if info.shard_count <= self.shard_count or self._error is not None:
            return
        assert self._wake is not None
        old = self.shard_count
        self._growing = True
        self._notify()
        try:
            while self._error is None and (self._in_flight or any(ln.pending for ln in self._lanes.values())):
                await self._changes()
            assert self.shard_map is not None
            self.shard_map.grow(info.shard_count)
            self.metrics.shard_count = info.shard_count
            self.metrics.shard_growths += 1
        finally:
            self._growing = False
            self._notify()
        log.info("stream %s grew from %d to %d shards", self.stream, old, info.shard_count)
        call_observers(
            "shardline_on_shard_growth", stream=self.stream, old_count=old, new_count=info.shard_count
        )

    # ------------------------------------------------------------------ flush and close

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is written or dead-lettered and every batch acked."""
        assert self._wake is not None
        self._flushing += 1
        self._wake.set()
        try:

            async def _wait() -> None:
                while self._error is None and self._batches:
                    await self._changes()

            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise DeliveryError(
                f"flush timed out after {timeout:g} s with {sum(b.remaining for b in self._batches)} records "
                f"not yet written"
            ) from None
        finally:
            self._flushing -= 1
        self.check()
        self.dead_letters.flush()

    async def close(self, *, flush: bool = True, close_transport: bool = True) -> None:
        """Flush (unless the engine failed), stop the tasks, close the dead-letter target and transport."""
        try:
            if flush and self._error is None and self._wake is not None:
                await self.flush()
        finally:
            self._closing = True
            for task in self._tasks:
                task.cancel()
            for task in list(self._sends):
                task.cancel()
            await asyncio.gather(*self._tasks, *self._sends, return_exceptions=True)
            self.dead_letters.close()
            if close_transport:
                await self.transport.close()
        if self._error is not None and self._batches:
            unwritten = sum(b.remaining for b in self._batches)
            raise DeliveryError(
                f"the sink stopped with {unwritten} records not written (their batches were not acked): "
                f"{self._error}"
            ) from self._error
