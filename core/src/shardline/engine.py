"""The delivery engine behind :class:`shardline.StreamSink` (runs on one asyncio loop).

Records arrive as :class:`~shardline.records.EncodedBatch`es (already placed on shards and encoded
as request fragments by the transport's wire) and are queued per shard in a **lane**. The
dispatcher packs requests from ready lanes up to every protocol limit and keeps up to
``max_in_flight_requests`` in flight.
In every mode a lane is in at most one request at a time, and a lane's failed records go back to
the front of its queue, ahead of everything later: a shard's records are sent in write order.

Ordering (``ordering``):

``"strict"`` (default)
    **For every key, the first occurrences of its records in the stream are in write order**,
    whatever the stream does: records failed at random or as a tail, requests failed as a whole
    (4xx/5xx), timeouts and connection resets whose outcome is unknown, a server killed and
    restarted, shard growth. Duplicates are possible (at-least-once). By construction: a record is
    sent only once every earlier record of its key is known to be written (or dead-lettered), so at
    most one record per key is ever unconfirmed. A request therefore carries at most one record per
    key (each key's earliest queued record; later records of a key wait behind it), and a
    record whose outcome is unknown is sent again before anything later of its key. A stream's rate
    for one key is bounded by one record per round trip; many keys fill requests as usual.
    (``"paranoid"`` is accepted as another name for ``"strict"``.)
``"none"``
    Records are packed freely (many records of a key per request), still one request per shard in
    flight. Order breaks only when the stream fails a record and accepts a later record of the same
    key in the same response (per-record failures that are not a tail); each such key is counted in
    ``metrics.order_violations``. Faster with few hot keys under faults; never the default.

The engine is protocol-neutral: limits, the encoding of a request body and the meaning of every
error are the transport's :class:`~shardline.wire.Wire` (``transport.wire``). Failures are
classified by the wire into named outcomes: **written**; **retry** (a plain retryable per-record
error: sent again at once, at the head of the shard's next request); **throttled** (a throttling
error, or a whole request refused for the rate: the shard's allowance is halved and it backs off,
see :mod:`shardline.throttle`); **unreachable** (connection errors, timeouts, other 5xx: every
record of the request is kept and retried with capped backoff, for as long as it takes: an outage
is not a bad record); **refresh** (a shard the stream does not have: retried after re-reading the
shard map); **permanent** for the record (too large, invalid: dead-lettered with the reason);
**fatal** for the stream (not found, access denied, a whole request refused as invalid: the sink
stops, nothing more is acknowledged). With ``retry_deadline_s`` set, a record still refused per
record that long after its first failure is dead-lettered too (off by default).

Dead letters are made durable (:meth:`DeadLetterWriter.flush`) before any acknowledgement that
follows them, so a source never commits past a dead letter that is not on disk.

:meth:`Engine.stop` (the first stop signal of a run) stops retrying at once: requests in flight
finish, records not yet sent may still go out once, and records that fail from then on stay
unacknowledged for the next run. :meth:`Engine.flush` and :meth:`Engine.close` take a timeout and
raise :class:`~shardline.DeliveryError` naming how many records were not delivered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from shardline.deadletter import DeadLetterWriter, dead_letter_entry
from shardline.errors import (
    AccessDeniedError,
    ConfigError,
    DeliveryError,
    PluginError,
    StreamNotFoundError,
    StreamUnreachableError,
    TransportError,
)
from shardline.metrics import SinkMetrics
from shardline.partitioning import ShardMap
from shardline.plugins import call_observers
from shardline.records import EncodedBatch
from shardline.redact import redact_url
from shardline.throttle import ShardThrottle
from shardline.transport import PutBodyResult, PutFailure, PutRecord, Transport, failures_of
from shardline.wire import Outcome, RequestOutcome, Wire

log = logging.getLogger("shardline.sink")

ORDERING_MODES = ("strict", "none")
ORDERING_ALIASES = {"paranoid": "strict"}

_MIN_ALLOWANCE = 10
"""AIMD floor: a throttled shard still gets requests of up to this many records."""
_SCAN_FACTOR = 4
"""While packing at most one record per key, look this many times the request size into a queue."""
_OUTAGE_LOG_EVERY_S = 10.0
"""At most one warning this often while requests fail as a whole."""
_MIN_SCAN = 64
"""With few hot keys a scan looks about 8x as far as the keys it found last time, at least this far."""
_SCAN_SEGMENTS = 256  # and at most this many queue segments (a queue under faults is fragmented)

T = TypeVar("T")


_WRITTEN, _THROTTLED, _REFRESH, _PERMANENT = (
    int(Outcome.WRITTEN),
    int(Outcome.THROTTLED),
    int(Outcome.REFRESH),
    int(Outcome.PERMANENT),
)  # plain ints for the settling loop (an enum attribute look-up per record shows in profiles)


def wire_of(transport: Transport) -> Wire:
    """The :class:`~shardline.wire.Wire` a transport supplies (its ``wire`` attribute).

    Raises :class:`PluginError` naming the transport when it has none: the engine has no default
    protocol (limits, encoding and error names are the transport's).
    """
    wire = getattr(transport, "wire", None)
    if not isinstance(wire, Wire):
        name, url = type(transport).__name__, redact_url(str(getattr(transport, "url", "?")))
        raise PluginError(
            f"transport {name} ({url}) has no `wire`: a transport "
            f"must expose its protocol's limits, encoding and error outcomes as a shardline.wire.Wire "
            f"(`transport.wire`)"
        )
    return wire


def resolve_request_limits(options: EngineOptions, wire: Wire) -> None:
    """Fill ``max_records_per_request``/``max_request_bytes`` from the wire's limits when unset;
    :class:`ConfigError` when one is set above them (a stream would refuse such a request)."""
    limits = wire.limits
    for name, most in (
        ("max_records_per_request", limits.max_records_per_request),
        ("max_request_bytes", limits.max_request_bytes),
    ):
        value = getattr(options, name)
        if value is None:
            setattr(options, name, most)
        elif not 1 <= value <= most:
            raise ConfigError(
                f"{name}={value:,} is above what the stream accepts per request ({most:,}); "
                f"choose a value from 1 to {most:,} (or leave it unset)"
            )
    if options.max_request_bytes is not None and options.max_request_bytes <= wire.body_overhead + 1:
        raise ConfigError(f"max_request_bytes={options.max_request_bytes:,} leaves no room for a record")


def ordering_mode(name: str) -> str:
    """The ordering mode ``name`` stands for; :class:`ConfigError` when it is none."""
    mode = ORDERING_ALIASES.get(name, name)
    if mode not in ORDERING_MODES:
        raise ConfigError(f"ordering={name!r} is not a mode; choose one of {', '.join(ORDERING_MODES)}")
    return mode


@dataclass
class EngineOptions:
    """Tuning of the engine (see :class:`shardline.StreamSink` for the meaning of each)."""

    max_in_flight_bytes: int = 64 * 2**20
    max_in_flight_requests: int = 16
    linger_ms: float = 5.0
    retry_deadline_s: float | None = None
    ordering: str = "strict"
    shard_refresh_s: float = 30.0
    backoff_base_s: float = 0.05
    backoff_max_s: float = 5.0
    start_timeout_s: float = 5.0
    max_records_per_request: int | None = None
    """Records per request; None: the wire's limit (a value above it is a ConfigError)."""
    max_request_bytes: int | None = None
    """Bytes per request body; None: the wire's limit (a value above it is a ConfigError)."""


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
    """The ordering lane of one shard: its queue, whether it is in flight, and its throttle."""

    shard: int
    throttle: ShardThrottle
    queue: collections.deque[_Seg] = field(default_factory=collections.deque)
    pending: int = 0
    busy: bool = False
    oldest: float = 0.0
    frozen: bool = False  # stopping: its records failed after the stop and are not retried
    scan_hint: int = 0  # records the last one-per-key scan found (0: it filled its request)


async def _wait_event(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds passed (None: no limit).

    ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11, ``wait_for`` loses a cancellation
    that arrives as the event gets set (the task stays "cancelling" and waits again), which hung
    ``close()`` after a stop; ``asyncio.timeout`` has no such race.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _runs(positions: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Sorted positions as runs of consecutive ones: ``[3, 4, 5, 9]`` -> ``[(3, 6), (9, 10)]``."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.concatenate(([0], breaks))].tolist()
    ends = (positions[np.append(breaks - 1, len(positions) - 1)] + 1).tolist()
    return list(zip(starts, ends, strict=True))


@dataclass
class _Request:
    """One PutRecords request: pieces of lanes' queues, in body order (a lane's pieces adjacent)."""

    pieces: list[tuple[_Lane, _Seg]]
    count: int
    body_bytes: int

    def by_lane(self) -> Iterator[tuple[_Lane, list[_Seg]]]:
        """Each lane of the request with its pieces, in body order."""
        i = 0
        while i < len(self.pieces):
            lane = self.pieces[i][0]
            segs: list[_Seg] = []
            while i < len(self.pieces) and self.pieces[i][0] is lane:
                segs.append(self.pieces[i][1])
                i += 1
            yield lane, segs


@dataclass(frozen=True)
class _WholeFailure:
    """A request that failed as a whole with a retryable error: nothing of it is known written."""

    error: str
    throttled: bool


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
        options.ordering = ordering_mode(options.ordering)
        self.wire = wire_of(transport)
        resolve_request_limits(options, self.wire)
        self.max_records = int(options.max_records_per_request or 0)
        self.max_request_bytes = int(options.max_request_bytes or 0)
        self.transport = transport
        self.options = options
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.create = create
        self.stream = redact_url(str(getattr(transport, "url", repr(transport))))
        self.shard_map: ShardMap | None = None
        self._lanes: dict[int, _Lane] = {}
        self._batches: collections.deque[_Batch] = collections.deque()
        self._seq = 0
        self._bytes = 0
        self._request_bytes = 0
        self._in_flight = 0
        self._growing = False
        self._closing = False
        self._stopping = False
        self._error: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._refresh_now: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._refresh_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._flushing = 0
        self._body_path = callable(getattr(transport, "put_records_body", None))
        self._warned_violation = False
        self._outage_logged = -_OUTAGE_LOG_EVERY_S

    @property
    def shard_count(self) -> int:
        """The shard count records are placed for (0 before :meth:`start`)."""
        return self.shard_map.shard_count if self.shard_map is not None else 0

    @property
    def undelivered(self) -> int:
        """Records submitted but neither written nor dead-lettered yet."""
        return sum(b.remaining for b in self._batches)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Learn the shard count (creating the stream if asked) and start the dispatcher.

        Retryable errors (connection refused, timeouts, 5xx) are retried for ``start_timeout_s``;
        then :class:`~shardline.StreamUnreachableError` is raised. :meth:`stop` ends the wait at once.
        """
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._refresh_now = asyncio.Event()
        self._stopped = asyncio.Event()
        if self._stopping:
            self._stopped.set()
        self._refresh_lock = asyncio.Lock()
        deadline = time.monotonic() + self.options.start_timeout_s
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

    async def _at_start(self, what: str, call: Callable[[], Awaitable[T]], deadline: float) -> T:
        """Run a start-up call, retrying retryable :class:`TransportError`s until ``deadline``."""
        assert self._stopped is not None
        throttle = ShardThrottle(1, self.options.backoff_base_s, self.options.backoff_max_s)
        while True:
            try:
                return await call()
            except TransportError as exc:
                if not exc.retryable:
                    raise
                now = time.monotonic()
                throttle.unreachable(now)
                if throttle.not_before > deadline or self._stopping:
                    raise StreamUnreachableError(
                        f"cannot reach stream {self.stream} ({what}: {exc}) within "
                        f"{self.options.start_timeout_s:g} s; check the URL and that the server is up "
                        f"(`shardline stream describe URL` tells), then run again"
                    ) from exc
                if throttle.hard_streak == 1:
                    log.warning(
                        "cannot reach stream %s (%s: %s); retrying for up to %g s",
                        self.stream,
                        what,
                        exc,
                        self.options.start_timeout_s,
                    )
                await _wait_event(self._stopped, throttle.not_before - now)

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
        if self._wake is None or self._changed is None:
            return
        self._wake.set()
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changes(self) -> None:
        assert self._changed is not None
        await self._changed.wait()

    def stop(self) -> None:
        """Stop retrying (a run's first stop signal); safe to call from the engine's loop only.

        Requests in flight finish; records never sent may still go out once; every record that
        fails from now on, or waits for a retry now, stays unacknowledged (the next run sends it).
        A :meth:`start` still connecting gives up at once.
        """
        self._stopping = True
        if self._stopped is not None:
            self._stopped.set()
        for lane in self._lanes.values():
            if lane.queue and lane.queue[0].attempt > 0:
                lane.frozen = True
        self._notify()

    def abort(self) -> None:
        """:meth:`stop`, and cancel the requests in flight too (their outcome stays unknown: records
        go back unacknowledged). A pending :meth:`flush` or :meth:`close` then returns at once."""
        self.stop()
        for task in list(self._sends):
            task.cancel()

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
        while (
            self._error is None
            and not self._stopping
            and (
                self._growing
                or (self._bytes > 0 and self._reserved(nbytes) > self.options.max_in_flight_bytes)
            )
        ):
            await self._changes()
        self.check()
        if self._stopping:
            raise DeliveryError(
                f"the sink is stopping: a batch of {enc.num_records:,} records was not queued",
                undelivered=enc.num_records,
            )
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
                lane = self._lanes[shard] = _Lane(
                    shard,
                    ShardThrottle(
                        self.max_records,
                        self.options.backoff_base_s,
                        self.options.backoff_max_s,
                        floor=_MIN_ALLOWANCE,
                    ),
                )
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
        bodies = min(queued, self.options.max_in_flight_requests * self.max_request_bytes)
        return queued + bodies

    # ------------------------------------------------------------------ acks

    def _progress(self) -> None:
        if not self._batches or self._batches[0].remaining:
            return
        if self.dead_letters.pending:
            # a dead letter is on disk before any ack that lets a source commit past it (flushed
            # only when an ack is due: one part file per acked stretch, not per batch submitted)
            try:
                self.dead_letters.flush()
            except OSError as exc:
                self._dead_letter_failed(exc)
                return  # no ack may pass dead letters that are not on disk
        while self._batches and self._batches[0].remaining == 0:
            batch = self._batches.popleft()
            self._bytes -= batch.nbytes
            self.metrics.batches_acked += 1
            if batch.ack is not None:
                try:
                    batch.ack()
                except Exception:
                    log.exception("an ack callback raised; delivery goes on")
            call_observers(
                "shardline_on_batch_acked", stream=self.stream, records=batch.records, nbytes=batch.nbytes
            )
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
            self._dead_letter_failed(exc)
        self.metrics.dead_letters += 1
        call_observers("shardline_on_dead_letter", stream=self.stream, record=entry, reason=reason)

    def _dead_letter_failed(self, exc: OSError) -> None:
        self._fail(DeliveryError(f"cannot write the dead-letter file {self.dead_letters.path}: {exc}"))

    def dead_letter_records(self, records: Sequence[dict[str, Any]], reason: str) -> None:
        """Dead-letter records from outside the engine (a source's rows); durable when it returns."""
        for record in records:
            self._dead_letter(record, str(record.get("error") or reason), reason)
        try:
            self.dead_letters.flush()
        except OSError as exc:
            self._dead_letter_failed(exc)

    # ------------------------------------------------------------------ dispatch

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        try:
            while not self._closing:
                now = time.monotonic()
                delay = self._dispatch(now)
                self._wake.clear()
                await _wait_event(self._wake, delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not hang the writers
            log.exception("sink dispatcher crashed")
            self._fail(exc)

    def _dispatch(self, now: float) -> float | None:
        """Start every request that may start now; return how long to sleep before looking again."""
        opts = self.options
        linger = opts.linger_ms / 1000.0
        urgent = self._flushing > 0 or self._growing or self._closing or self._stopping
        wait: float | None = None
        while self._in_flight < opts.max_in_flight_requests and self._error is None:
            ready: list[_Lane] = []
            due = False
            for lane in self._lanes.values():
                if not lane.pending or lane.busy or lane.frozen:
                    continue
                not_before = lane.throttle.not_before
                if not_before > now:
                    if self._stopping and lane.queue and lane.queue[0].attempt > 0:
                        lane.frozen = True  # a retry waiting for its backoff: not after a stop
                        self._notify()
                        continue
                    d = not_before - now
                    wait = d if wait is None else min(wait, d)
                    continue
                ready.append(lane)
                if urgent or lane.pending >= lane.throttle.allowance or now - lane.oldest >= linger:
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
        """Pack one request from ready lanes (oldest first), each lane's records adjacent."""
        opts = self.options
        room_records = self.max_records
        overhead = self.wire.body_overhead  # around the records, the last separator dropped
        room_bytes = self.max_request_bytes - overhead
        pieces: list[tuple[_Lane, _Seg]] = []
        count = 0
        body = overhead
        distinct = opts.ordering == "strict"
        for lane in lanes:
            if room_records <= 0 or room_bytes <= 0:
                break
            want = min(room_records, lane.throttle.allowance)
            if distinct:
                taken, used = self._take_distinct(lane, pieces, want, room_bytes)
            else:
                taken, used = self._take_run(lane, pieces, want, room_bytes)
            room_records -= taken
            room_bytes -= used
            body += used
            if taken:
                lane.pending -= taken
                lane.busy = True
                self.metrics.shard_in_flight[lane.shard] = (
                    self.metrics.shard_in_flight.get(lane.shard, 0) + taken
                )
                if lane.pending:
                    lane.oldest = time.monotonic()
                count += taken
        if not pieces:
            return None
        return _Request(pieces, count, body)

    def _take_run(
        self, lane: _Lane, pieces: list[tuple[_Lane, _Seg]], want: int, room_bytes: int
    ) -> tuple[int, int]:
        """Take up to ``want`` records from the head of ``lane``'s queue, in order, within ``room_bytes``."""
        taken = 0
        used = 0
        queue = lane.queue
        while queue and taken < want:
            seg = queue[0]
            offs = seg.batch.enc.offsets
            avail = min(seg.end - seg.start, want - taken)
            base = offs[seg.start]
            rel = offs[seg.start + 1 : seg.start + avail + 1] - base
            k = min(avail, int(np.searchsorted(rel, room_bytes - used, side="right")))
            if k > 0:
                pieces.append((lane, self._part(seg, seg.start, seg.start + k)))
                used += int(offs[seg.start + k] - base)
                if k == seg.end - seg.start:
                    queue.popleft()
                else:
                    seg.start += k
                taken += k
            if k < avail or k <= 0:
                break
        return taken, used

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
        if lane.scan_hint:  # the last scan found only this many keys: look a few times that far
            budget = min(budget, max(_MIN_SCAN, lane.scan_hint * 2 * _SCAN_FACTOR))
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
        lane.scan_hint = len(take) if len(take) < want else 0
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

    async def _put(self, request: _Request) -> list[PutFailure]:
        """Send one request; its failed records, in request order. Raises as the transport does."""
        if self._body_path:
            body = self.wire.body(
                [
                    seg.batch.enc.fragments[seg.batch.enc.offsets[seg.start] : seg.batch.enc.offsets[seg.end]]
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
        if any(not 0 <= f.index < request.count for f in failures):
            raise TransportError(
                f"the stream reported a failure outside the request of {request.count} records"
            )
        return failures

    async def _send(self, request: _Request) -> None:
        failures: list[PutFailure] | None = None
        whole: _WholeFailure | None = None
        self._request_bytes += request.body_bytes
        self.metrics.request_bytes = self._request_bytes
        try:
            self.metrics.requests += 1
            failures = await self._put(request)
        except TransportError as exc:
            outcome = self.wire.classify_request(exc)
            if outcome is RequestOutcome.FATAL:
                fatal = isinstance(exc, StreamNotFoundError | AccessDeniedError)
                self._fail(exc if fatal else DeliveryError(f"the stream refused a whole request: {exc}"))
            else:
                whole = _WholeFailure(f"{type(exc).__name__}: {exc}", outcome is RequestOutcome.THROTTLED)
        except asyncio.CancelledError:
            whole = _WholeFailure("cancelled", False)
            raise
        except Exception as exc:  # connection errors a transport did not wrap
            whole = _WholeFailure(f"{type(exc).__name__}: {exc}", False)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight_requests = self._in_flight
            self._request_bytes -= request.body_bytes
            self.metrics.request_bytes = self._request_bytes
            try:
                if whole is not None:
                    self._settle_failed_request(request, whole)
                elif failures is None:
                    self._release(request)
                elif not failures:
                    self._settle_written(request)
                else:
                    self._settle_answer(request, failures)
            except Exception as exc:
                log.exception("sink failed to settle a response")
                self._fail(exc)
            self._progress()
            self._notify()

    # ------------------------------------------------------------------ settling

    def _release(self, request: _Request) -> None:
        """Fatal: the engine failed; free the lanes, leave the records unacknowledged."""
        for lane, segs in request.by_lane():
            lane.busy = False
            self._in_flight_done(lane, sum(s.end - s.start for s in segs))

    def _settle_written(self, request: _Request) -> None:
        """Every record of the request was written."""
        self.metrics.records += request.count
        for lane, segs in request.by_lane():
            n = 0
            for seg in segs:
                k = seg.end - seg.start
                enc = seg.batch.enc
                self._done(seg.batch, k)
                self.metrics.bytes += int(enc.data_offsets[seg.end] - enc.data_offsets[seg.start])
                n += k
            lane.busy = False
            self._in_flight_done(lane, n)
            self.metrics.shard_records[lane.shard] = self.metrics.shard_records.get(lane.shard, 0) + n
            lane.throttle.written()
            self.metrics.shard_allowance[lane.shard] = lane.throttle.allowance

    def _settle_failed_request(self, request: _Request, whole: _WholeFailure) -> None:
        """The request failed as a whole (retryable): every record goes back, the lanes back off."""
        now = time.monotonic()
        self.metrics.failed_requests += 1
        if now - self._outage_logged >= _OUTAGE_LOG_EVERY_S:
            self._outage_logged = now
            log.warning(
                "a request to %s failed (%s); %s records wait and are retried with backoff",
                self.stream,
                whole.error,
                f"{self.undelivered:,}",
            )
        for lane, segs in request.by_lane():
            lane.busy = False
            n = sum(s.end - s.start for s in segs)
            self._in_flight_done(lane, n)
            retried = [self._retried(s, s.start, s.end, now, whole.error) for s in segs]
            self._requeue(lane, retried, now)
            if whole.throttled:
                lane.throttle.throttled(now)
            else:
                lane.throttle.unreachable(now)
            self.metrics.shard_allowance[lane.shard] = lane.throttle.allowance
            self._note_retry(lane, n, whole.error, retried)

    def _settle_answer(self, request: _Request, failures: list[PutFailure]) -> None:
        """The stream answered and refused some records: classify each, settle lane by lane."""
        now = time.monotonic()
        status = np.zeros(request.count, np.int8)  # Outcome per record of the request
        messages: dict[int, str] = {}
        for f in failures:
            status[f.index] = self.wire.classify(f)
            messages[f.index] = f.describe()  # with the server's detail, for dead letters and errors
        pos = 0
        for lane, segs in request.by_lane():
            n = sum(s.end - s.start for s in segs)
            self._settle_lane(lane, segs, status[pos : pos + n], messages, pos, now)
            pos += n

    def _settle_lane(
        self,
        lane: _Lane,
        segs: list[_Seg],
        status: npt.NDArray[np.int8],
        messages: dict[int, str],
        offset: int,
        now: float,
    ) -> None:
        """Settle one lane's part of an answered request (``status``: an Outcome per record).

        A lane's part is often cut into many small segments (retries, skipped repeats of a key), so
        this walks Python lists: numpy calls per tiny segment cost more than they save.
        """
        lane.busy = False
        self._in_flight_done(lane, len(status))
        codes: list[int] = status.tolist()
        retry: list[_Seg] = []
        written = 0
        error = ""
        deadline = self.options.retry_deadline_s
        pos = 0
        for seg in segs:
            k = seg.end - seg.start
            part = codes[pos : pos + k]
            enc = seg.batch.enc
            offs = enc.data_offsets
            seg_bytes = int(offs[seg.end] - offs[seg.start])
            if not any(part):  # all written
                written += k
                self._done(seg.batch, k)
                self.metrics.bytes += seg_bytes
                pos += k
                continue
            first = seg.first_failure
            expired = deadline is not None and first is not None and now - first > deadline
            run_start: int | None = None
            for j, code in enumerate(part):
                if code == _WRITTEN:
                    if run_start is not None:
                        retry.append(self._retried(seg, seg.start + run_start, seg.start + j, now, error))
                        run_start = None
                    continue
                i = seg.start + j
                seg_bytes -= int(offs[i + 1] - offs[i])
                message = messages[offset + pos + j]
                if code == _PERMANENT or expired:
                    if run_start is not None:
                        retry.append(self._retried(seg, seg.start + run_start, i, now, error))
                        run_start = None
                    reason = (
                        "rejected by the stream"
                        if code == _PERMANENT
                        else f"retry deadline of {deadline:g} s exceeded after {seg.attempt + 1} attempts"
                    )
                    self._dead_letter(enc.record(i), message, reason)
                    self._done(seg.batch, 1)
                else:
                    error = message
                    if run_start is None:
                        run_start = j
            if run_start is not None:
                retry.append(self._retried(seg, seg.start + run_start, seg.end, now, error))
            n_ok = part.count(_WRITTEN)
            if n_ok:
                written += n_ok
                self._done(seg.batch, n_ok)
                self.metrics.bytes += seg_bytes
            pos += k
        if written:
            self.metrics.records += written
            self.metrics.shard_records[lane.shard] = self.metrics.shard_records.get(lane.shard, 0) + written
        if _THROTTLED in codes:
            lane.throttle.throttled(now)
        elif written:
            lane.throttle.written()
        elif retry:
            lane.throttle.refused(now)
        self.metrics.shard_allowance[lane.shard] = lane.throttle.allowance
        if _REFRESH in codes and self._refresh_now is not None:
            self._refresh_now.set()
        if retry:
            self._requeue(lane, retry, now)
            self._note_retry(lane, sum(s.end - s.start for s in retry), error, retry)
            if written and self.options.ordering == "none":
                self._count_order_breaks(lane, segs, status)

    def _retried(self, seg: _Seg, start: int, end: int, now: float, error: str) -> _Seg:
        """Records ``start:end`` of ``seg`` after a failed attempt."""
        return _Seg(seg.batch, start, end, seg.attempt + 1, seg.first_failure or now, error)

    def _requeue(self, lane: _Lane, retry: list[_Seg], now: float) -> None:
        """Put failed records back at the front of their lane, in write order (or freeze it: stopping)."""
        if not retry:
            return
        lane.queue.extendleft(reversed(retry))
        lane.oldest = min(lane.oldest, now) if lane.pending else now
        lane.pending += sum(s.end - s.start for s in retry)
        if self._stopping:
            lane.frozen = True

    def _note_retry(self, lane: _Lane, n: int, error: str, segs: list[_Seg]) -> None:
        self.metrics.retries += n
        call_observers(
            "shardline_on_retry",
            stream=self.stream,
            shard_id=lane.shard,
            records=n,
            error=error,
            attempt=max(s.attempt for s in segs),
        )

    def _count_order_breaks(self, lane: _Lane, segs: list[_Seg], status: npt.NDArray[np.int8]) -> None:
        """``ordering="none"``: count keys of which a record failed and a later one was written."""
        keys = np.concatenate([s.batch.enc.key_hashes[s.start : s.end] for s in segs])
        again = np.flatnonzero((status != Outcome.WRITTEN) & (status != Outcome.PERMANENT))
        failed_keys, first = np.unique(keys[again], return_index=True)
        first_fail = again[first]
        ok = np.flatnonzero(status == Outcome.WRITTEN)
        at = np.minimum(np.searchsorted(failed_keys, keys[ok]), len(failed_keys) - 1)
        broken = (failed_keys[at] == keys[ok]) & (ok > first_fail[at])
        violations = len(np.unique(keys[ok][broken]))
        if not violations:
            return
        self.metrics.order_violations += violations
        if not self._warned_violation:
            self._warned_violation = True
            log.warning(
                "ordering='none': the stream failed a record of shard %d and accepted a later record of the "
                "same key; that key's order is broken (counted in metrics.order_violations; the default "
                "ordering='strict' rules this out)",
                lane.shard,
            )

    def _in_flight_done(self, lane: _Lane, n: int) -> None:
        left = self.metrics.shard_in_flight.get(lane.shard, 0) - n
        self.metrics.shard_in_flight[lane.shard] = max(left, 0)

    # ------------------------------------------------------------------ shard growth

    async def _refresh_loop(self) -> None:
        assert self._refresh_now is not None
        while True:
            await _wait_event(self._refresh_now, self.options.shard_refresh_s)
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

    def _stuck(self) -> bool:
        """Stopping, and nothing more can be delivered: nothing in flight, every lane empty or frozen."""
        return (
            self._stopping
            and not self._in_flight
            and all(lane.frozen or not lane.pending for lane in self._lanes.values())
        )

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is written or dead-lettered and every batch acked.

        Raises :class:`~shardline.DeliveryError` (``.undelivered`` records not delivered) after
        ``timeout`` seconds (None: no limit), or once a :meth:`stop` left records undeliverable.
        """
        assert self._wake is not None
        self._flushing += 1
        self._wake.set()
        try:

            async def _wait() -> None:
                while self._error is None and self._batches and not self._stuck():
                    await self._changes()

            async with asyncio.timeout(timeout):
                await _wait()
        except TimeoutError:
            left = self.undelivered
            raise DeliveryError(
                f"flush timed out after {timeout:g} s with {left:,} records not delivered to {self.stream} "
                f"(they stay unacknowledged)",
                undelivered=left,
            ) from None
        finally:
            self._flushing -= 1
        self.check()
        if self._batches:
            left = self.undelivered
            raise DeliveryError(
                f"stopped with {left:,} records not delivered to {self.stream} (they stay unacknowledged)",
                undelivered=left,
            )
        self.dead_letters.flush()

    async def close(
        self, *, timeout: float | None = 300.0, flush: bool = True, close_transport: bool = True
    ) -> None:
        """Flush (unless the engine failed) within ``timeout``, then stop the tasks and release the
        dead-letter target and the transport. Raises :class:`~shardline.DeliveryError` when records
        were left undelivered (timeout, stop, or a fatal stream error); they stay unacknowledged.
        """
        undelivered: DeliveryError | None = None
        try:
            if flush and self._error is None and self._wake is not None:
                try:
                    await self.flush(timeout)
                except DeliveryError as exc:
                    if self._error is not None:
                        raise
                    undelivered = exc
        finally:
            self._closing = True
            if self._wake is not None:
                self._wake.set()  # the dispatcher returns by itself too, should a cancel be lost
            for task in self._tasks:
                task.cancel()
            for task in list(self._sends):
                task.cancel()
            await asyncio.gather(*self._tasks, *self._sends, return_exceptions=True)
            try:
                self.dead_letters.close()
            finally:
                if close_transport:
                    await self.transport.close()
        if undelivered is not None:
            raise undelivered
        if self._error is not None and self._batches:
            left = self.undelivered
            raise DeliveryError(
                f"the sink stopped with {left:,} records not written (their batches were not acked): "
                f"{self._error}",
                undelivered=left,
            ) from self._error
