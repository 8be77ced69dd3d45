"""The stream sink: write Arrow batches into a PutRecords stream, fast and without losing a record.

::

    with shardline.StreamSink("http://127.0.0.1:8081/bigdata/orders", partition_key="customer_id") as sink:
        sink.write(batch, ack=lambda: print("written"))

:class:`StreamSink` is the synchronous facade (its engine runs on an asyncio loop in its own
thread); :class:`AsyncStreamSink` runs on the caller's loop. Both map columns to records
(:mod:`shardline.records`), place records on shards (:mod:`shardline.partitioning`) and hand them to
the delivery engine (:mod:`shardline.engine`, whose docstring states the ordering guarantee).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

import numpy as np
import pyarrow as pa

from shardline.config import CheckedSinkOptions, LimitsOptions, check_sink_options
from shardline.deadletter import DeadLetterWriter
from shardline.engine import Engine, EngineOptions
from shardline.errors import ConfigError, SchemaError, ShardlineError
from shardline.metrics import SinkMetrics
from shardline.ownership import ShardOwnership
from shardline.partitioning import resolve_partitioner
from shardline.records import (
    EncodedBatch,
    MappedColumns,
    Origin,
    RecordMapping,
    batch_nbytes,
    check_mapping,
    dead_record,
    map_columns,
    place,
)
from shardline.sink_options import SinkKwargs, SinkOptions, sink_options
from shardline.transport import Transport

_MAX_CHUNK_ROWS = 65_536
log = logging.getLogger("shardline.sink")

_OFFLOAD_ROWS = 4_096


def open_transport(
    stream: str | Transport, options: Mapping[str, Any] | None = None, *, origin: str = "StreamSink"
) -> Transport:
    """A transport for a stream URL (by its scheme, from the plugins' registrations), or ``stream`` itself.

    ``options`` are validated against the ``Options`` model the transport's factory declares (when
    it does): :class:`~shardline.ConfigError` for an unknown key or a bad value.
    """
    if not isinstance(stream, str):
        return stream
    scheme, sep, _rest = stream.partition("://")
    if not sep:
        raise ConfigError(
            f"stream {stream!r} is not a URL; write e.g. http://HOST:PORT/CONTAINER/STREAM, "
            f"v3io:///CONTAINER/STREAM or local://DIR/CONTAINER/STREAM"
        )
    from shardline import plugins
    from shardline.config import check_transport_options

    factory = plugins.lookup("transports", scheme.lower())
    checked = check_transport_options(stream, factory, options, origin)
    transport: Transport = factory(stream, **checked)
    return transport


def _validated(o: SinkOptions, origin: str) -> CheckedSinkOptions:
    """``o`` checked with the config's models and messages (:class:`ConfigError` naming each bad one)."""
    return check_sink_options(
        create=o.create,
        ordering=o.ordering,
        data=o.data,
        partitioner=o.partitioner,
        limits={name: getattr(o, name) for name in LimitsOptions.model_fields},
        backoff={"backoff_base_s": o.backoff_base_s, "backoff_max_s": o.backoff_max_s},
        mapping={
            "partition_key": o.partition_key,
            "data_column": o.data_column,
            "data_template": o.data_template,
            "client_info": o.client_info,
            "shard_id": o.shard_id,
            "columns": o.columns,
        },
        origin=origin,
    )


def _engine_options(o: SinkOptions, checked: CheckedSinkOptions) -> EngineOptions:
    limits = {name: getattr(checked.limits, name) for name in LimitsOptions.model_fields}
    return EngineOptions(
        **limits,  # the [sink.limits] of a config, as validated
        ordering=o.ordering,
        backoff_base_s=checked.backoff_base_s,
        backoff_max_s=checked.backoff_max_s,
    )


class _Core:
    """What both facades share: the mapping, placement and the engine."""

    def __init__(self, stream: str | Transport, options: SinkOptions, origin: str = "StreamSink") -> None:
        o = options
        checked = _validated(o, origin)
        limits = checked.limits  # from here on: the values as validated
        self.mapping = RecordMapping(
            data=o.data,
            data_column=o.data_column,
            partition_key=o.partition_key,
            client_info=o.client_info,
            shard_id=o.shard_id,
            partitioner=o.partitioner,
            template=o.data_template,
            columns=tuple(o.columns) if o.columns else None,
            origin_columns=tuple(o.origin_columns) if o.origin_columns else None,
        )
        self.strategy = resolve_partitioner(self.mapping.effective_partitioner)
        self.owned = o.owned_shards
        if self.owned is not None:
            ShardOwnership.check_strategy(self.strategy.name, self.strategy.per_key is not None)
        self.owns_transport = isinstance(stream, str)
        self.transport = open_transport(stream, o.transport_options, origin=origin)
        self.metrics = SinkMetrics()
        self.dead_letter_writer = DeadLetterWriter(o.dead_letter)
        self.engine = Engine(
            self.transport,
            _engine_options(o, checked),
            self.dead_letter_writer,
            self.metrics,
            create=checked.create,
        )
        self.wire = self.engine.wire
        self.limits = self.wire.limits
        try:
            check_mapping(self.mapping, self.limits)
        except SchemaError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        self.max_in_flight_bytes = limits.max_in_flight_bytes
        self._rr = 0

    def chunks(self, batch: pa.RecordBatch | pa.Table) -> list[pa.RecordBatch]:
        """Split a written batch into chunks small enough to keep memory within the byte cap."""
        if isinstance(batch, pa.Table):
            parts = batch.to_batches()
        elif isinstance(batch, pa.RecordBatch):
            parts = [batch]
        else:
            raise ShardlineError(f"write() takes a pyarrow RecordBatch or Table, not {type(batch).__name__}")
        out: list[pa.RecordBatch] = []
        for part in parts:
            n = part.num_rows
            if n == 0:
                continue
            per_row = max(batch_nbytes(part) / n * 3, 1.0)  # encoded fragments ~ 1.4x, plus raw data
            rows = int(max(1, min(_MAX_CHUNK_ROWS, self.max_in_flight_bytes / 4 / per_row)))
            out.extend(part.slice(i, rows) for i in range(0, n, rows))
        return out

    def annotate(self, cols: MappedColumns, row_base: int, origin: Origin | None) -> int:
        """Tell mapped chunk columns where they start in the written batch and where its rows came
        from, count what the codec could not represent; return where the next chunk starts."""
        cols.row_base, cols.origin = row_base, origin
        self.metrics.nonfinite_floats += cols.nonfinite_floats
        return row_base + cols.num_rows

    def needs_refresh(self, cols: MappedColumns) -> bool:
        """True when explicit ShardIds reach beyond the known count (the stream may have grown)."""
        ids = cols.shard_ids
        return ids is not None and len(ids) > 0 and int(ids.max()) >= self.engine.shard_count

    def encode(self, cols: MappedColumns) -> tuple[EncodedBatch, list[tuple[dict[str, Any], str]]]:
        """Place mapped columns for the engine's current shard count."""
        assert self.engine.shard_map is not None
        pack = getattr(self.wire, "pack", None)  # optional: e.g. KPL aggregation of a key's records
        if pack is not None:
            cols = pack(cols)
        enc = place(
            cols,
            self.engine.shard_map,
            self.strategy,
            self._rr,
            wire=self.wire,
            owned=self.owned,
            generations=self.engine.options.ordering == "strict",
        )
        self._rr = (self._rr + cols.num_rows) % max(self.engine.shard_count, 1)
        dead = [(dead_record(cols, row), reason) for row, reason in enc.dead]
        return enc, dead

    def queued(self, enc: EncodedBatch) -> None:
        """Count what the engine took of a placed batch (the rows another writer owns)."""
        self.metrics.not_owned += enc.not_owned


class AsyncStreamSink:
    """Write Arrow batches into a stream from asyncio code (``async with AsyncStreamSink(...) as sink``).

    Parameters (the same for :class:`StreamSink`), as keywords or as one
    :class:`~shardline.SinkOptions` (``options=``; keywords given too override its values):

    stream
        A stream URL (``http://HOST:PORT/CONTAINER/STREAM``, ``v3io:///CONTAINER/STREAM``,
        ``local://DIR/CONTAINER/STREAM``, ...) or a :class:`~shardline.Transport` (which the sink
        uses but does not close).
    partition_key
        Column whose value (any scalar type, as text) is each record's PartitionKey. Records of a key
        go to one shard, in the order written (see ``ordering``). Null keys are placed round robin.
    data, data_column, data_template, columns
        The Data codec: ``"json"`` (one JSON object per row over ``columns`` or all columns),
        ``"raw"`` (the binary/string ``data_column`` as is), ``"arrow"`` (one-row Arrow IPC streams),
        ``"template"`` (``data_template``, a ``str.format`` string naming columns), or a plugin codec.
    client_info, shard_id
        Optional columns for ClientInfo (<= 16 bytes) and an explicit ShardId (``partitioner="column"``).
    partitioner
        ``"hash"`` (default: jump hash of xxh64(key)), ``"modulo"`` (xxh32(key) % shards, as storey),
        ``"server"`` (send only the key), ``"column"``, ``"round-robin"``.
    create
        ``{"shards": N, "retention_hours": H}``: create the stream when it does not exist. Without it a
        missing stream raises :class:`~shardline.StreamNotFoundError`.
    dead_letter
        A ``.jsonl`` file or a ``.parquet`` directory of part files for records that can never be
        written, on disk before the ack that follows them (see :mod:`shardline.deadletter`). Without
        it they are counted (``metrics.dead_letters``) and the latest 1,000 are kept in :attr:`dead_letters`.
    max_in_flight_bytes
        Cap on the memory records take: encoded records buffered or in flight plus the request
        bodies built from them (copies, reserved in advance); ``write`` waits while it is reached
        (backpressure).
    max_in_flight_requests, linger_ms
        Concurrent requests; how long a shard's records may wait for a fuller request.
    retry_deadline_s
        None (default): records refused with retryable errors are retried for as long as it
        takes (an outage is not a bad record). A number of seconds: a record still refused *per
        record* that long after its first failure is dead-lettered (whole-request failures such as
        an unreachable stream never dead-letter).
    ordering
        ``"strict"`` (default): for every key, the first occurrences of its records in the stream
        are in write order, under every failure pattern (duplicates possible); a key gets at most
        one record per round trip. ``"none"``: many records of a key per request; a key's order
        breaks when the stream fails a record and accepts a later one of the key in the same
        response (counted in ``metrics.order_violations``). See :mod:`shardline.engine`.
    origin_columns
        Columns that say where a row came from (e.g. ``["topic", "partition", "offset", "key"]``):
        those a batch has are copied into each dead letter of its rows (``origin``).
    owned_shards
        A :class:`~shardline.ShardOwnership` when this sink is one of several writers of one
        source (a Dask backfill): only rows whose key it owns are written; the others are dropped
        and acknowledged with their batch (not written, not dead letters; ``metrics.not_owned``).
        :class:`~shardline.ConfigError` for a partitioner that places rows without a key.
    start_timeout_s
        How long connecting (Describe, Create) retries an unreachable stream before raising
        :class:`~shardline.StreamUnreachableError`.
    shard_refresh_s
        How often the shard count is re-read (growth is also noticed at once from ShardIDOutOfRange).
    transport_options
        Keyword options for the transport factory (e.g. ``access_key``).
    backoff_base_s, backoff_max_s
        Retry backoff: ``base * 2**(n-1)`` capped at ``max``, with jitter.
    max_records_per_request, max_request_bytes
        Smaller requests than the stream's own limits (the default, from the transport's wire);
        a value above them is a :class:`~shardline.ConfigError`.
    """

    _origin = "AsyncStreamSink"  # how error messages name the options' owner

    def __init__(
        self, stream: str | Transport, options: SinkOptions | None = None, **kwargs: Unpack[SinkKwargs]
    ) -> None:
        self._core = _Core(stream, sink_options(options, kwargs), origin=self._origin)
        self._started = False
        self._closed = False

    @property
    def metrics(self) -> SinkMetrics:
        """The sink's counters (see :class:`~shardline.SinkMetrics`)."""
        return self._core.metrics

    @property
    def dead_letters(self) -> list[dict[str, Any]]:
        """The latest dead letters (at most 1,000), whether or not a dead-letter file is configured."""
        return list(self._core.dead_letter_writer.recent)

    @property
    def shard_count(self) -> int:
        """The shard count the sink currently places records for."""
        return self._core.engine.shard_count

    async def start(self) -> None:
        """Connect: read the shard count (creating the stream if asked). Called by ``async with``.

        Retryable transport errors are retried (capped backoff) for ``start_timeout_s``, then
        :class:`~shardline.StreamUnreachableError` is raised. When starting fails, the sink is closed
        (transport and dead-letter file released) and the error raised.
        """
        if not self._started:
            try:
                await self._core.engine.start()
            except BaseException:
                await self.close()
                raise
            self._started = True

    async def write(
        self,
        batch: pa.RecordBatch | pa.Table,
        ack: Callable[[], None] | None = None,
        *,
        origin: Origin | None = None,
    ) -> None:
        """Queue a batch; ``ack()`` is called once every record of it is written or dead-lettered.

        Raises :class:`~shardline.SchemaError` at once when the mapping does not fit the batch. Waits
        while ``max_in_flight_bytes`` is reached. Acks come in write order. ``origin(row)`` (optional)
        says where row ``row`` of ``batch`` came from; a dead letter of that row holds it as ``origin``.
        """
        if self._closed:
            raise ShardlineError("write() on a closed sink")
        await self.start()
        self._core.engine.check()
        chunks = self._core.chunks(batch)
        if not chunks:
            if ack is not None:
                await self._submit_empty(ack)
            return
        row_base = 0
        for i, chunk in enumerate(chunks):
            # big chunks are encoded in a worker thread, so requests keep flowing meanwhile
            offload = chunk.num_rows >= _OFFLOAD_ROWS
            if offload:
                cols = await asyncio.to_thread(map_columns, chunk, self._core.mapping, self._core.limits)
            else:
                cols = map_columns(chunk, self._core.mapping, self._core.limits)
            row_base = self._core.annotate(cols, row_base, origin)
            if self._core.needs_refresh(cols):
                await self._core.engine.refresh()
            last = i == len(chunks) - 1
            while True:
                if offload:
                    enc, dead = await asyncio.to_thread(self._core.encode, cols)
                else:
                    enc, dead = self._core.encode(cols)
                if await self._core.engine.submit(enc, dead, ack if last else None):
                    self._core.queued(enc)
                    break

    async def _submit_empty(self, ack: Callable[[], None]) -> None:
        cols = MappedColumns(
            num_rows=0, data=pa.array([], pa.large_binary()), reasons=[], invalid=np.zeros(0, dtype=np.bool_)
        )
        enc, dead = self._core.encode(cols)
        await self._core.engine.submit(enc, dead, ack)

    async def dead_letter(self, records: Sequence[dict[str, Any]], reason: str) -> None:
        """Dead-letter records that never became stream records (e.g. a source's unparsable rows).

        Each record is a dict with ``data`` (bytes), and optionally ``partition_key``, ``row`` and
        ``error``; they are written to the dead-letter target (made durable before this returns),
        counted in ``metrics.dead_letters`` and reported to ``shardline_on_dead_letter``.
        """
        self._core.engine.dead_letter_records(records, reason)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is written or dead-lettered (and acked).

        Raises :class:`~shardline.DeliveryError` (with ``.undelivered``) after ``timeout`` seconds
        (None: no limit) or when :meth:`stop` left records undelivered.
        """
        if self._started:
            await self._core.engine.flush(timeout)

    def stop(self) -> None:
        """Stop retrying at once (what a run does on its first stop signal); call from the sink's loop.

        Requests in flight finish and records never sent may still go out once; records that fail
        from now on stay unacknowledged. A following :meth:`flush` or :meth:`close` returns as soon
        as nothing more can be delivered, raising :class:`~shardline.DeliveryError` with the count.
        """
        self._core.engine.stop()

    def abort(self) -> None:
        """:meth:`stop`, and cancel the requests in flight (a second stop signal, or a stop whose
        grace ran out); call from the sink's loop."""
        self._core.engine.abort()

    async def close(self, timeout: float | None = 300.0) -> None:
        """Flush for at most ``timeout`` seconds (None: no limit), then release the transport and
        the dead-letter file. Raises :class:`~shardline.DeliveryError` naming how many records were
        not delivered when the flush did not finish (they stay unacknowledged)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._core.engine.close(timeout=timeout, close_transport=self._core.owns_transport)
        else:
            self._core.dead_letter_writer.close()
            if self._core.owns_transport:
                await self._core.transport.close()

    async def __aenter__(self) -> AsyncStreamSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class StreamSink:
    """Write Arrow batches into a stream from ordinary code (``with StreamSink(...) as sink``).

    The engine runs on an asyncio loop in a thread of its own; :meth:`write` encodes in the calling
    thread and blocks while the byte cap is reached. Acks are called from the sink's thread, in
    write order; an ack callback must be quick and must not call :meth:`write` (it would wait on
    the thread that runs it). Parameters are those of :class:`AsyncStreamSink`. Connecting happens in the
    constructor: a missing stream raises :class:`~shardline.StreamNotFoundError` there.
    """

    def __init__(
        self, stream: str | Transport, options: SinkOptions | None = None, **kwargs: Unpack[SinkKwargs]
    ) -> None:
        resolved = sink_options(options, kwargs)  # an unknown option fails here, before a thread starts
        self._loop = _new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shardline-sink", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._sink: AsyncStreamSink = self._call(self._make(stream, resolved))
        except BaseException:
            self._stop_loop()
            raise
        try:
            self._call(self._sink.start())
        except BaseException:
            try:  # release the transport (its connection pool) and the dead-letter file
                self._call(self._sink.close(), timeout=30)
            except BaseException:
                log.debug("closing a sink that failed to start raised", exc_info=True)
            self._stop_loop()
            raise

    @staticmethod
    async def _make(stream: str | Transport, options: SinkOptions) -> AsyncStreamSink:
        return _SyncFacadeSink(stream, options)

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while connecting: do not leave it running
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def metrics(self) -> SinkMetrics:
        """The sink's counters (see :class:`~shardline.SinkMetrics`)."""
        return self._sink.metrics

    @property
    def dead_letters(self) -> list[dict[str, Any]]:
        """The latest dead letters (at most 1,000)."""
        return self._sink.dead_letters

    @property
    def shard_count(self) -> int:
        """The shard count the sink currently places records for."""
        return self._sink.shard_count

    def write(
        self,
        batch: pa.RecordBatch | pa.Table,
        ack: Callable[[], None] | None = None,
        *,
        origin: Origin | None = None,
    ) -> None:
        """Queue a batch; ``ack()`` is called (from the sink's thread) once every record of it is
        written or dead-lettered, in write order. Raises :class:`~shardline.SchemaError` at once when
        the mapping does not fit; blocks while ``max_in_flight_bytes`` is reached. ``origin``: see
        :meth:`AsyncStreamSink.write`."""
        if self._closed:
            raise ShardlineError("write() on a closed sink")
        core = self._sink._core
        engine = core.engine
        with self._lock:
            engine.check()
            chunks = core.chunks(batch)
            if not chunks:
                if ack is not None:
                    self._call(self._sink._submit_empty(ack))
                return
            row_base = 0
            for i, chunk in enumerate(chunks):
                cols = map_columns(chunk, core.mapping, core.limits)  # encoded in the caller's thread
                row_base = core.annotate(cols, row_base, origin)
                if core.needs_refresh(cols):
                    self._call(engine.refresh())
                last = i == len(chunks) - 1
                while True:
                    enc, dead = core.encode(cols)
                    if self._call(engine.submit(enc, dead, ack if last else None)):
                        core.queued(enc)
                        break

    def dead_letter(self, records: Sequence[dict[str, Any]], reason: str) -> None:
        """Dead-letter records that never became stream records (see :meth:`AsyncStreamSink.dead_letter`)."""
        self._call(self._sink.dead_letter(records, reason))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is written or dead-lettered (and acked); see
        :meth:`AsyncStreamSink.flush` for ``timeout`` and the :class:`~shardline.DeliveryError`."""
        self._call(self._sink.flush(timeout))

    def stop(self) -> None:
        """Stop retrying at once (see :meth:`AsyncStreamSink.stop`). Safe from any thread and from a
        signal handler: it only schedules the stop on the sink's loop."""
        self._loop.call_soon_threadsafe(self._sink.stop)

    def abort(self) -> None:
        """:meth:`stop` and cancel the requests in flight (see :meth:`AsyncStreamSink.abort`); safe
        from any thread."""
        self._loop.call_soon_threadsafe(self._sink.abort)

    def close(self, timeout: float | None = 300.0) -> None:
        """Flush for at most ``timeout`` seconds, then release the transport, the dead-letter file
        and the sink's thread; see :meth:`AsyncStreamSink.close`."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._sink.close(timeout))
        finally:
            self._stop_loop()

    def __enter__(self) -> StreamSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncFacadeSink(AsyncStreamSink):
    """The AsyncStreamSink inside a :class:`StreamSink`: its errors name ``StreamSink``."""

    _origin = "StreamSink"


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """The sink thread's loop: uvloop when it is installed (less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
