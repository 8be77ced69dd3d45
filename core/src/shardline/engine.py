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
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from shardline.batching import BatchCreator
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
from shardline.lanes import Batch, Lane, Request, WholeFailure, span
from shardline.metrics import SinkMetrics
from shardline.partitioning import ShardMap
from shardline.plugins import call_observers
from shardline.records import EncodedBatch
from shardline.redact import redact_url
from shardline.settling import Settler
from shardline.throttle import ShardThrottle
from shardline.transport import PutBodyResult, PutFailure, PutRecord, Transport, failures_of
from shardline.wire import RequestOutcome, Wire

log = logging.getLogger("shardline.sink")

ORDERING_MODES = ("strict", "none")
ORDERING_ALIASES = {"paranoid": "strict"}

_MIN_ALLOWANCE = 10
"""AIMD floor: a throttled shard still gets requests of up to this many records."""
T = TypeVar("T")


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

    max_in_flight_bytes: int = 16 * 2**20
    """16 MiB: the smallest cap measured to keep >= 0.95x the rate of 64 MiB on a backfill of ~100-byte
    rows (benchmarks/resume_cost.py); it bounds what a kill -9 re-sends (~37,000 such rows)."""
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


async def _wait_event(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds passed (None: no limit).

    ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11, ``wait_for`` loses a cancellation
    that arrives as the event gets set (the task stays "cancelling" and waits again), which hung
    ``close()`` after a stop; ``asyncio.timeout`` has no such race.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _outcome(failures: list[PutFailure] | None, whole: WholeFailure | None) -> str:
    """The ``outcome`` that ``shardline_on_request`` reports for a request."""
    if whole is not None:
        return "throttled" if whole.throttled else "failed"
    if failures is None:
        return "fatal"
    return "partial" if failures else "written"


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
        metrics.stream = self.stream
        self.shard_map: ShardMap | None = None
        self._lanes: dict[int, Lane] = {}
        self._batches: collections.deque[Batch] = collections.deque()
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
        self.settler = Settler(
            metrics,
            self.stream,
            self.wire,
            options.ordering,
            options.retry_deadline_s,
            dead_letter=self._dead_letter,
            refresh_soon=self._refresh_soon,
            stopping=lambda: self._stopping,
            undelivered=lambda: self.undelivered,
        )
        self.batches = BatchCreator(
            options.ordering, self.max_records, self.max_request_bytes, self.wire.body_overhead, metrics
        )

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
        self.shard_map = ShardMap.for_stream(info)
        self.metrics.shard_count = self.shard_map.shard_count
        self.metrics.last_contact = time.monotonic()
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

        Returns False (queuing nothing) when ``enc`` was placed for another shard map than the
        current one (its generation): the caller must place the batch again on :attr:`shard_map`.
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
        assert self.shard_map is not None
        if enc.num_records and (
            enc.shard_map is not self.shard_map or enc.generation != self.shard_map.generation
        ):
            return False
        self._bytes += nbytes
        self.metrics.buffered_bytes = self._bytes
        self._seq += 1
        batch = Batch(self._seq, enc, enc.num_records, nbytes, enc.num_records + len(dead), ack)
        self.metrics.records_in += batch.records
        self._batches.append(batch)
        for record, reason in dead:
            self._dead_letter(record, reason, reason)
        now = time.monotonic()
        for shard, (start, end) in enc.shard_bounds.items():
            lane = self._lanes.get(shard)
            if lane is None:
                lane = self._lanes[shard] = Lane(
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
            lane.queue.append(span(batch, start, end, enc.shard_generations.get(shard)))
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

    def _done(self, batch: Batch, n: int) -> None:
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
            ready: list[Lane] = []
            due = False
            short = 0  # records the ready lanes limited by their keys can give (see below)
            waiting = False  # a lane in flight has records queued: it is ready again soon
            for lane in self._lanes.values():
                if lane.busy and lane.pending:
                    waiting = True
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
                allowance = lane.throttle.allowance
                if urgent or now - lane.oldest >= linger:
                    due = True
                elif lane.pending >= allowance:
                    # one record per key: a lane with few keys cannot fill its allowance however
                    # much it holds; such lanes wait for each other (for a lane in flight to come
                    # back, never longer than the linger) to share a request
                    if lane.scan_hint and lane.scan_hint < allowance:
                        short += lane.scan_hint
                    else:
                        due = True
                if not due:
                    d = lane.oldest + linger - now
                    wait = d if wait is None else min(wait, d)
            if short and (not waiting or short >= self.max_records):
                due = True
            if not ready or not due:
                break
            ready.sort(key=lambda ln: ln.oldest)
            request = self.batches.build(ready)
            if request is None:
                break
            self._in_flight += 1
            self.metrics.in_flight_requests = self._in_flight
            task = asyncio.create_task(self._send(request))
            self._sends.add(task)
            task.add_done_callback(functools.partial(self._sent, request))
        return wait

    # ------------------------------------------------------------------ sending

    def _records(self, request: Request) -> list[PutRecord]:
        """The request's records as :class:`PutRecord`s, for transports without the body path."""
        assert self.shard_map is not None
        address = self.shard_map.address
        out: list[PutRecord] = []
        for _lane, seg in request.pieces:
            enc = seg.batch.enc
            n = len(seg)
            take = pa.array(seg.rows, pa.int64())
            datas = enc.data.take(take).to_pylist()
            shards: list[int | None] = [None] * n
            hash_keys: list[str | None] = [None] * n
            if enc.send_shard_id:
                for j, lane in enumerate(enc.shards[seg.rows].tolist()):
                    where = address(lane)
                    if isinstance(where, str):
                        hash_keys[j] = where
                    else:
                        shards[j] = where
            keys: list[str | None] = [None] * n
            if enc.key_index is not None:
                values = enc.key_list()
                keys = [values[k] if k >= 0 else None for k in enc.key_index[seg.rows].tolist()]
            infos: list[bytes | None] = [None] * n
            if enc.client_info is not None:
                infos = enc.client_info.take(take).to_pylist()
            out.extend(map(PutRecord, datas, keys, shards, infos, hash_keys))
        return out

    async def _put(self, request: Request) -> list[PutFailure]:
        """Send one request; its failed records, in request order. Raises as the transport does.

        A body answer that names a shard the map does not know (the stream was resharded) asks
        for a refresh of the map at once."""
        if self._body_path:
            body = self.wire.body([seg.fragments() for _lane, seg in request.pieces])
            result: PutBodyResult = await self.transport.put_records_body(body, request.count)  # type: ignore[attr-defined]
            failures = result.failures
            ids = result.shard_ids
            if ids and self.shard_map is not None and not self.shard_map.knows(ids):
                self._refresh_soon()
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

    def _sent(self, request: Request, task: asyncio.Task[None]) -> None:
        """A send task ended. One that :meth:`abort` cancelled before it ran never reached
        :meth:`_send`'s own settling: put its records back (unacknowledged) and free its lanes, or
        the request would count as in flight for ever and a stopped sink's close would never end."""
        self._sends.discard(task)
        if request.started:
            return
        self._in_flight -= 1
        self.metrics.in_flight_requests = self._in_flight
        self.settler.failed(request, WholeFailure("cancelled", False))
        self._progress()
        self._notify()

    async def _send(self, request: Request) -> None:
        request.started = True
        failures: list[PutFailure] | None = None
        whole: WholeFailure | None = None
        self._request_bytes += request.body_bytes
        self.metrics.request_bytes = self._request_bytes
        sent = time.monotonic()
        try:
            self.metrics.requests += 1
            failures = await self._put(request)
            self.metrics.last_contact = time.monotonic()
        except TransportError as exc:
            outcome = self.wire.classify_request(exc)
            if outcome is RequestOutcome.FATAL:
                fatal = isinstance(exc, StreamNotFoundError | AccessDeniedError)
                self._fail(exc if fatal else DeliveryError(f"the stream refused a whole request: {exc}"))
            else:
                whole = WholeFailure(f"{type(exc).__name__}: {exc}", outcome is RequestOutcome.THROTTLED)
        except asyncio.CancelledError:
            whole = WholeFailure("cancelled", False)
            raise
        except Exception as exc:  # connection errors a transport did not wrap
            whole = WholeFailure(f"{type(exc).__name__}: {exc}", False)
        finally:
            self._in_flight -= 1
            self.metrics.in_flight_requests = self._in_flight
            self._request_bytes -= request.body_bytes
            self.metrics.request_bytes = self._request_bytes
            try:
                if whole is not None:
                    self.settler.failed(request, whole)
                elif failures is None:
                    self.settler.release(request)
                elif not failures:
                    self.settler.written(request)
                else:
                    self.settler.answered(request, failures)
            except Exception as exc:
                log.exception("sink failed to settle a response")
                self._fail(exc)
            self._progress()
            self._notify()
            call_observers(
                "shardline_on_request",
                stream=self.stream,
                records=request.count,
                nbytes=request.body_bytes,
                seconds=time.monotonic() - sent,
                outcome=_outcome(failures, whole),
            )

    # ------------------------------------------------------------------ settling

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
        """Describe the stream now; if its shards changed, drain what is queued and in flight, then
        swap the shard map (see :meth:`_refresh`)."""
        async with self._refresh_lock:
            await self._refresh()

    def _refresh_soon(self) -> None:
        """Have the refresh loop re-read the shard map now (not waiting for its interval)."""
        if self._refresh_now is not None:
            self._refresh_now.set()

    async def _refresh(self) -> None:
        """If the stream's shards changed (grown, split, merged): drain, swap the map, go on.

        Draining stops intake and sends everything queued under the old map until nothing is
        queued or in flight, so no record placed for the old map is sent after the swap, and each
        key's records before the swap are confirmed before any after it is sent: a key's order holds
        across the reshard (a stream that routes by key puts records for a closed parent on the
        child that owns the key; readers read the parent to its end, then its children).
        """
        info = await self.transport.describe()
        self.metrics.last_contact = time.monotonic()
        assert self.shard_map is not None
        if self._error is not None or not self.shard_map.differs(info):
            return
        old = self.shard_count
        self._growing = True
        self._notify()
        try:
            while self._error is None and (self._in_flight or any(ln.pending for ln in self._lanes.values())):
                await self._changes()
            if self._error is not None:
                return
            hash_range = self.shard_map.hash_range
            self.shard_map.adopt(info)
            if hash_range or self.shard_map.hash_range:  # lane numbers now name other shards
                self._lanes = {}
            self.metrics.shard_count = self.shard_map.shard_count
            self.metrics.shard_growths += 1
        finally:
            self._growing = False
            self._notify()
        new = self.shard_map.shard_count
        log.info("stream %s changed its shards: %d open before, %d now", self.stream, old, new)
        call_observers("shardline_on_shard_growth", stream=self.stream, old_count=old, new_count=new)

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
