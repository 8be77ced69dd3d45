"""The Kafka source: topic partitions -> Arrow batches, offsets committed only after the sink acks.

Threads: :meth:`KafkaSource.batches` runs on the pipeline's thread, which owns the consumer
(poll, seek). :meth:`KafkaSource.ack` may come from any thread (the sink's): it only updates the
:class:`~shardline_kafka.offsets.OffsetTracker`. A committer thread sends what was acknowledged
(``commit_async``, at most every ``commit_interval_ms``) as acks arrive — also while the pipeline's
thread is blocked on the sink or after the source reached its end; :meth:`KafkaSource.close`
commits the rest synchronously.
Rebalances run the :class:`_Rebalance` listener on kafka-python's IO thread while the consumer
thread waits in ``poll``: on revocation it calls the flush hook (see :meth:`KafkaSource.set_flush`),
waits until every yielded batch of the revoked partitions is acknowledged, and commits them before
the partitions are given up.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaTimeoutError, UnsupportedCodecError
from kafka.structs import MemberState, OffsetAndMetadata
from shardline import ConfigError, ShardlineError, Source, SourceOptions

from shardline_kafka.arrow import METADATA_COLUMNS, records_to_batch
from shardline_kafka.json_values import DeadLetterFn, dead_letter_entries, dead_rows, parse_json_values
from shardline_kafka.offsets import KafkaAckToken, OffsetTracker
from shardline_kafka.options import KafkaCheckpoint, KafkaSourceOptions, start_timestamp_ms

log = logging.getLogger(__name__)

CODECS_EXTRA = "shardline-kafka[codecs]"
TOMBSTONE = "tombstone: the message has no value (a delete on a compacted topic)"


class MissingCodecError(ShardlineError):
    """A topic holds batches compressed with a codec whose library is not installed."""


class KafkaSource(Source):
    """Reads Kafka topics (a list or a regex) as a member of a consumer group.

    Yields batches with columns ``key``, ``value`` (binary), ``topic``, ``partition``, ``offset``,
    ``timestamp``, ``headers``; with ``value_format = "json"`` the value's top-level fields become
    typed columns instead of ``value``. Offsets are committed, per partition, up to the first
    record not yet acknowledged by :meth:`ack`; Kafka's committed offsets are the durable state
    (``checkpoint()`` is informational, ``resume_from`` is not used).
    """

    Options: ClassVar[type[SourceOptions]] = KafkaSourceOptions
    Checkpoint = KafkaCheckpoint
    origin_columns: ClassVar[tuple[str, ...]] = ("topic", "partition", "offset", "key")

    def __init__(self, options: SourceOptions, checkpoint: dict[str, Any] | None = None) -> None:
        if not isinstance(options, KafkaSourceOptions):
            options = KafkaSourceOptions.model_validate(options.model_dump())
        super().__init__(options, checkpoint)
        self.opts: KafkaSourceOptions = options
        self._tracker = OffsetTracker()
        self._consumer: KafkaConsumer | None = None
        self._flush: Callable[[], None] | None = None
        self._dead_letter: DeadLetterFn | None = None
        self._dl_writer: Any = None  # shardline.deadletter.DeadLetterWriter for opts.dead_letter
        self._start_ts = start_timestamp_ms(options.start)
        self._positioned: set[TopicPartition] = set()  # start position applied (once per process)
        self._to_position: set[TopicPartition] = set()  # assigned, paused until positioned
        self._end: dict[TopicPartition, int] = {}  # stop_at_end targets
        self._listed_end: dict[TopicPartition, int] = {}  # ListOffsets(latest) answers at start
        self._before_ts: set[TopicPartition] = set()  # start timestamp not reached yet
        self._assigned: set[TopicPartition] = set()
        self._joined = threading.Event()
        self._closing = False
        self._committer: threading.Thread | None = None
        self._closed_event = threading.Event()
        self._commit_lock = threading.Lock()  # commits are sent one at a time, in offset order
        self._state_lock = threading.Lock()
        self._yielded: dict[TopicPartition, int] = {}  # next offset after the last yielded record
        self._highwater: dict[TopicPartition, int] = {}
        self._records = 0
        self._dead_letters = 0
        self._tombstones = 0
        self._stable: dict[TopicPartition, int] = {}  # last stable offset of each partition's last fetch
        self._sees_stable = False  # the fetch's last stable offset is observed (see _watch_stable)

    @classmethod
    def resume_identity(cls, options: SourceOptions) -> dict[str, Any]:
        """What identifies this source's progress: the group and what it reads (not tuning options)."""
        assert isinstance(options, KafkaSourceOptions)
        return {"group_id": options.group_id, "topics": options.topics, "pattern": options.pattern}

    @classmethod
    def default_mapping(cls, options: SourceOptions) -> dict[str, Any] | None:
        """A bridge's mapping: the Kafka key -> PartitionKey, the value -> Data byte for byte.

        ``value_format = "json"``: the parsed fields as a JSON object (``data = "json"``), still
        keyed by the Kafka key. Without ``key`` in ``metadata_columns`` there is no PartitionKey.
        A pipeline's ``[mapping]`` table replaces this as a whole.
        """
        assert isinstance(options, KafkaSourceOptions)
        mapping: dict[str, Any] = (
            {"data": "raw", "data_column": "value"} if options.value_format == "raw" else {"data": "json"}
        )
        if "key" in options.metadata_columns:
            mapping["partition_key"] = "key"
        return mapping

    # -- wiring the pipeline may use -------------------------------------------------------------

    def set_flush(self, flush: Callable[[], None] | None) -> None:
        """Give the source a function that makes the sink deliver (and ack) what it holds.

        Called on a worker thread when partitions are being revoked in a rebalance, while the
        source's own thread waits inside ``poll``; it should return once everything written so far
        is acknowledged (``ack`` called). Without it the source still waits up to
        ``revoke_timeout_s`` for acks before committing and giving the partitions up.
        """
        self._flush = flush

    def set_dead_letter(self, dead_letter: DeadLetterFn | None) -> None:
        """Give the source the pipeline's dead-letter writer for values that are not valid JSON.

        ``dead_letter(rows, reason)`` receives dicts with ``topic``, ``partition``, ``offset``,
        ``key``, ``value``, ``timestamp`` and ``error``; it must have written them durably when it
        returns, because the batch's offsets (theirs included) are committed after the batch's ack.
        The ``dead_letter`` .jsonl file of the source options, when set, takes precedence; with
        neither, they are logged at ERROR level with their offsets and skipped.
        """
        self._dead_letter = dead_letter

    # -- the Source contract ---------------------------------------------------------------------

    def batches(self) -> Iterator[tuple[pa.RecordBatch, KafkaAckToken]]:
        """Poll the subscribed partitions and yield one batch per poll until stopped or at the end."""
        consumer = self._open()
        opts = self.opts
        if opts.stop_at_end:
            self._snapshot_ends(consumer)
        while not self.stopping:
            try:
                polled = consumer.poll(timeout_ms=opts.poll_timeout_ms, max_records=opts.max_batch_records)
            except UnsupportedCodecError as exc:
                raise MissingCodecError(self._codec_message(exc)) from None
            if self._to_position:
                self._apply_start(consumer)
            if polled:
                out = self._build(consumer, polled)
                if out is not None:
                    yield out
            if opts.stop_at_end and self._at_end(consumer):
                log.info(
                    "kafka source: reached the end offsets %s", {str(tp): e for tp, e in self._end.items()}
                )
                return

    def ack(self, token: KafkaAckToken) -> None:
        """Mark a batch acknowledged; the committer thread commits its offsets soon (and close() does)."""
        self._tracker.ack(token)

    def checkpoint(self) -> dict[str, Any]:
        """Acknowledged offsets per ``topic:partition`` (informational; Kafka holds the commits)."""
        return {
            "group_id": self.opts.group_id,
            "offsets": {
                f"{tp.topic}:{tp.partition}": off for tp, off in self._tracker.acked_offsets().items()
            },
        }

    def progress(self) -> dict[str, Any]:
        """Records, tombstones and dead letters so far, and consumer lag per ``topic:partition`` and in total.

        Lag counts up to the reachable end: the last stable offset under read_committed, else the
        high watermark. ``skipped`` (``{"tombstones": N}`` with ``tombstones = "skip"``) is shown
        in the run's summary line.
        """
        committed = self.opts.isolation_level == "read_committed"
        with self._state_lock:
            lag = {}
            for tp, hw in self._highwater.items():
                if tp in self._assigned:
                    end = min(hw, self._stable.get(tp, hw)) if committed else hw
                    lag[f"{tp.topic}:{tp.partition}"] = max(0, end - self._yielded.get(tp, end))
        facts: dict[str, Any] = {
            "records": self._records,
            "lag": sum(lag.values()),
            "lag_by_partition": lag,
            "tombstones": self._tombstones,
        }
        if self.opts.tombstones == "skip" and self._tombstones:
            facts["skipped"] = {"tombstones": self._tombstones}
        if self.opts.value_format == "json" or self.opts.tombstones == "dead-letter":
            facts["dead_letters"] = self._dead_letters
        return facts

    def close(self) -> None:
        """Commit everything acknowledged, then leave the group and close the consumer."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self._closing = True
        self._closed_event.set()
        self._tracker.wake()
        if self._committer is not None:
            self._committer.join(timeout=30)
        try:
            self._commit_acked(sync=True, consumer=consumer)
        except Exception as exc:
            log.warning("final offset commit failed (records after the last commit will be re-read): %s", exc)
        consumer.close(autocommit=False, timeout_ms=10_000)
        if self._dl_writer is not None:
            self._dl_writer.close()

    # -- internals -------------------------------------------------------------------------------

    def _open(self) -> KafkaConsumer:
        opts = self.opts
        servers = _servers(opts.bootstrap_servers)
        waiting = threading.Timer(  # say what the run waits for, if it waits at all
            _WAIT_NOTICE_S,
            lambda: print(
                f"shardline: kafka source: waiting for a broker at {servers} "
                f"(up to {opts.connect_timeout_s:g} s, connect_timeout_s)",
                file=sys.stderr,
                flush=True,
            ),
        )
        waiting.daemon = True
        waiting.start()
        try:
            consumer = KafkaConsumer(**opts.consumer_config())
        except KafkaTimeoutError:
            raise ConfigError(
                f"kafka source: no broker at {servers} answered within {opts.connect_timeout_s:g} s "
                f"(connect_timeout_s); start the broker (a local one: python -m shardline_kafka.broker), "
                f"or fix bootstrap_servers and the security options"
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"kafka source: cannot connect to {servers}: {type(exc).__name__}: {exc}; "
                f"check bootstrap_servers and the security options"
            ) from exc
        finally:
            waiting.cancel()
        self._committer = threading.Thread(
            target=self._commit_loop, name="shardline-kafka-commit", daemon=True
        )
        self._committer.start()
        self._watch_stable(consumer)
        listener = _Rebalance(self)
        if opts.pattern is not None:
            consumer.subscribe(pattern=opts.pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(opts.topics or ()), listener=listener)
        self._consumer = consumer
        return consumer

    def _snapshot_ends(self, consumer: KafkaConsumer) -> None:
        """Remember the end offsets of every matching partition now ("seen at start").

        Some brokers (Tansu) answer ListOffsets(latest) with less than the true end, so the end
        used is the larger of this answer and the high watermark of the partition's first fetch.
        """
        if self.opts.pattern is not None:
            regex = re.compile(self.opts.pattern)
            topics = [t for t in consumer.topics() if regex.fullmatch(t)]
        else:
            topics = list(self.opts.topics or ())
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if tps:
            self._listed_end.update(consumer.end_offsets(tps))

    def _watch_stable(self, consumer: KafkaConsumer) -> None:
        """Note the last stable offset (LSO) each fetch response reports, per partition.

        kafka-python 3 keeps a fetch's high watermark (``consumer.highwater``) but not its LSO, the
        end a read_committed consumer can reach while a transaction is open; so the fetcher's
        parse step of this consumer is wrapped to read it. Without that layout (another
        kafka-python), stop_at_end under read_committed falls back to the high watermark.
        """
        fetcher = getattr(consumer, "_fetcher", None)
        parse = getattr(fetcher, "_parse_fetched_data", None)
        if parse is None:
            if self.opts.isolation_level == "read_committed" and self.opts.stop_at_end:
                log.warning(
                    "kafka source: this kafka-python does not show the last stable offset; stop_at_end "
                    "under read_committed waits for open transactions to end"
                )
            return
        stable = self._stable

        def parse_noting_stable(completed_fetch: Any) -> Any:
            data = getattr(completed_fetch, "partition_data", None)
            lso = getattr(data, "last_stable_offset", None)
            if isinstance(lso, int) and lso >= 0:
                stable[completed_fetch.topic_partition] = lso
            return parse(completed_fetch)

        setattr(fetcher, "_parse_fetched_data", parse_noting_stable)  # noqa: B010 - this consumer's only
        self._sees_stable = True

    def _reachable_end(self, consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
        """How far reading ``tp`` gets now: read_committed, the last stable offset; else the high watermark.

        None until a fetch reported it.
        """
        highwater: int | None = consumer.highwater(tp)
        if self.opts.isolation_level != "read_committed" or not self._sees_stable:
            return highwater
        stable = self._stable.get(tp)
        if stable is None or highwater is None:
            return stable
        return min(stable, highwater)

    def _end_of(self, consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
        """stop_at_end target of an owned partition; None until a fetch reported its end.

        The end is the reachable end (:meth:`_reachable_end`) of the partition's first fetch, or the
        ListOffsets(latest) answer at start when larger (it is isolation-aware too).
        """
        end = self._end.get(tp)
        if end is None:
            reachable = self._reachable_end(consumer, tp)
            if reachable is None:
                return None
            end = self._end[tp] = max(reachable, self._listed_end.get(tp, 0))
        return end

    def _apply_start(self, consumer: KafkaConsumer) -> None:
        """Seek newly assigned partitions to the configured start, then resume them."""
        with self._state_lock:
            tps = [tp for tp in self._to_position if tp in self._assigned]
            self._to_position.clear()
        if not tps:
            return
        if self.opts.start == "earliest":
            consumer.seek_to_beginning(*tps)
        elif self.opts.start == "latest":
            consumer.seek_to_end(*tps)
        else:
            assert self._start_ts is not None
            found = consumer.offsets_for_times({tp: self._start_ts for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                if hit is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, hit.offset)
            # brokers that cannot look up times (Tansu answers offset 0): skip earlier records here too
            self._before_ts.update(tps)
        self._positioned.update(tps)
        consumer.resume(*tps)

    def _build(
        self, consumer: KafkaConsumer, polled: dict[TopicPartition, list[Any]]
    ) -> tuple[pa.RecordBatch, KafkaAckToken] | None:
        parts: list[tuple[str, int, list[Any]]] = []
        ends: dict[TopicPartition, int] = {}
        stop = self.opts.stop_at_end
        for tp, records in polled.items():
            if not records or tp not in self._assigned:
                continue
            if tp in self._before_ts:
                records = self._from_start_time(tp, records)
                if not records:
                    continue
            if stop:
                end = self._end_of(consumer, tp)
                if end is not None and records[-1].offset >= end:
                    records = [r for r in records if r.offset < end]
                    consumer.pause(tp)
                    if not records:
                        continue
            parts.append((tp.topic, tp.partition, records))
            ends[tp] = records[-1].offset + 1
        if not parts:
            return None
        batch = records_to_batch(parts)
        with self._state_lock:
            self._yielded.update(ends)
            for tp in ends:
                hw = consumer.highwater(tp) if tp in self._assigned else None
                if hw is not None:
                    self._highwater[tp] = hw
        self._records += batch.num_rows
        batch = self._handle_tombstones(batch)
        metadata = tuple(self.opts.metadata_columns)
        if self.opts.value_format == "json":
            batch, bad = parse_json_values(batch, metadata)
            if bad:
                self._dead_letters += len(bad)
                self._report_bad(bad)
        elif len(metadata) < len(METADATA_COLUMNS):
            batch = batch.select([n for n in batch.schema.names if n == "value" or n in metadata])
        return batch, self._tracker.register(ends)

    def _from_start_time(self, tp: TopicPartition, records: list[Any]) -> list[Any]:
        """Drop records before the first one at or after the start timestamp."""
        start = self._start_ts
        for i, record in enumerate(records):
            if record.timestamp >= start:  # type: ignore[operator]
                self._before_ts.discard(tp)
                return records[i:]
        return []

    def _handle_tombstones(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Apply ``tombstones`` to the rows whose value is null; count them.

        ``skip`` and ``dead-letter`` drop them from the batch (their offsets are still covered by
        the batch's ack token, so they are committed with it); ``empty`` gives them an empty value
        (``{}`` with ``value_format = "json"``: a row of null fields).
        """
        values = batch.column("value")
        if not values.null_count:
            return batch
        self._tombstones += values.null_count
        mode = self.opts.tombstones
        if mode == "empty":
            index = batch.schema.get_field_index("value")
            empty = b"{}" if self.opts.value_format == "json" else b""
            return batch.set_column(index, batch.schema.field(index), values.fill_null(empty))
        if mode == "dead-letter":
            self._dead_letters += values.null_count
            self._report_bad(dead_rows(batch, pc.is_null(values), TOMBSTONE), TOMBSTONE)
        return batch.filter(pc.is_valid(values))

    def _codec_message(self, exc: Exception) -> str:
        what = f"topics {self.opts.topics}" if self.opts.topics else f"topics matching {self.opts.pattern!r}"
        match = re.search(r"for (\w+) compression", str(exc))
        codec = match.group(1) if match else "a compression"
        return (
            f"kafka source: {what} hold {codec}-compressed records and the {codec} library is not "
            f'installed: pip install "{CODECS_EXTRA}" (lz4, zstd and snappy)'
        )

    def _report_bad(self, rows: list[dict[str, Any]], reason: str = "value is not a JSON object") -> None:
        if self._dead_letter is not None and self.opts.dead_letter is None:
            self._dead_letter(rows, reason)  # the pipeline's: the sink's dead-letter target, counted
            return
        if self.opts.dead_letter is not None:
            if self._dl_writer is None:
                from shardline import DeadLetterWriter

                self._dl_writer = DeadLetterWriter(self.opts.dead_letter)
            for entry in dead_letter_entries(rows, reason):
                self._dl_writer.write(entry)
            self._dl_writer.flush()  # on disk (fsync) before the batch is yielded, so before its commit
            return
        for row in rows:
            log.error(
                "kafka source: skipped %s[%s] offset %s: %s (configure a dead-letter target to keep it)",
                row["topic"],
                row["partition"],
                row["offset"],
                row["error"],
            )

    def _at_end(self, consumer: KafkaConsumer) -> bool:
        """stop_at_end: joined, the group is stable, and every owned partition is at its end offset.

        Between a revocation and the next assignment the owned set is empty (or partial): that is
        not the end, hence the check of the member state.
        """
        if not self._joined.is_set() or consumer.group_metadata().state != MemberState.STABLE:
            return False
        with self._state_lock:
            owned = set(self._assigned)
            if self._to_position & owned:
                return False
        for tp in owned:
            end = self._end_of(consumer, tp)
            if end is None:
                return False
            if self._yielded.get(tp, -1) >= end:
                continue
            if consumer.position(tp) < end:
                return False
        return True

    def _commit_loop(self) -> None:
        """The committer thread: commit acknowledged offsets soon after they advance."""
        interval = self.opts.commit_interval_ms / 1000
        while not self._closing:
            if not self._tracker.wait_news(timeout=1.0) or self._closing:
                continue
            try:
                self._commit_acked(sync=False)
            except Exception as exc:  # the next round (or close) commits it
                log.warning("offset commit failed: %s", exc)
            if interval:
                self._closed_event.wait(interval)  # a rate limit on commits; close() cuts it short

    def _commit_acked(self, *, sync: bool, consumer: KafkaConsumer | None = None) -> None:
        consumer = consumer or self._consumer
        if consumer is None:
            return
        with self._commit_lock:
            with self._state_lock:
                owned = set(self._assigned)
            offsets = self._tracker.to_commit(owned)
            if not offsets:
                return
            payload = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
            if sync:
                consumer.commit(payload)
            else:
                consumer.commit_async(payload, callback=_log_commit_failure)
            self._tracker.committed(offsets)

    # called from the listener (kafka-python's IO thread) ------------------------------------------

    def _on_assigned(self, assigned: set[TopicPartition]) -> list[TopicPartition]:
        self._tracker.assign(assigned)
        with self._state_lock:
            self._assigned |= assigned  # eager: after a full revoke; cooperative: the added ones
            to_position = []
            if self.opts.start != "committed":
                to_position = [tp for tp in assigned if tp not in self._positioned]
                self._to_position.update(to_position)
        self._joined.set()
        return to_position

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._tracker.revoke(revoked)
        with self._state_lock:
            self._assigned -= revoked
            self._to_position -= revoked
            self._before_ts -= revoked
            for tp in revoked:
                self._yielded.pop(tp, None)
                self._highwater.pop(tp, None)


def _log_commit_failure(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning("async offset commit failed (the next commit covers it): %s", response)


class _Rebalance(AsyncConsumerRebalanceListener):
    """Commits acknowledged offsets of revoked partitions before they are given up.

    Runs on kafka-python's IO thread (kafka-python >= 3): it must not call blocking consumer APIs,
    so it waits by awaiting the IO loop's sleep and commits with an awaited ``commit_async``.
    """

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        source = self.source
        revoked = set(revoked)
        consumer = source._consumer
        if revoked and consumer is not None and not source._closing:
            if source._tracker.unacked(revoked):
                await self._drain(consumer, revoked)
            offsets = source._tracker.to_commit(revoked)
            if offsets:
                payload = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
                try:
                    await consumer.commit_async(payload)
                except Exception as exc:
                    log.warning(
                        "commit on revocation failed (the new owner re-reads from the last commit): %s", exc
                    )
        source._on_revoked(revoked)

    async def _drain(self, consumer: KafkaConsumer, revoked: set[TopicPartition]) -> None:
        """Let the sink deliver what it holds of ``revoked`` (flush hook); wait at most revoke_timeout_s."""
        source = self.source
        flusher = None
        if source._flush is not None:
            flusher = threading.Thread(
                target=_call_quietly, args=(source._flush,), name="shardline-kafka-flush"
            )
            flusher.start()
        deadline = time.monotonic() + source.opts.revoke_timeout_s
        sleep = getattr(getattr(consumer, "_net", None), "sleep", None)  # kafka-python 3's IO loop
        if sleep is None:  # another kafka-python layout: wait on the tracker (blocks the IO loop)
            source._tracker.wait_acked(revoked, source.opts.revoke_timeout_s)
        while sleep is not None and source._tracker.unacked(revoked) and time.monotonic() < deadline:
            await sleep(0.01)  # yields the IO loop (heartbeats) while the sink acks
        if source._tracker.unacked(revoked):
            log.warning(
                "rebalance: %d batch(es) of revoked partitions not acknowledged within %.0f s; "
                "their records will be read again by the new owner",
                source._tracker.unacked(revoked),
                source.opts.revoke_timeout_s,
            )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        source = self.source
        to_position = source._on_assigned(set(assigned))
        if to_position and source._consumer is not None:
            source._consumer.pause(*to_position)  # positioned by the consumer thread after poll

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.source._on_revoked(set(lost))


def _call_quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:
        log.warning("flush on rebalance failed: %s", exc)


_WAIT_NOTICE_S = 1.0
"""A broker that has not answered after this long gets a line on stderr saying what the run waits for."""


def _servers(bootstrap_servers: str | list[str]) -> str:
    """``"host1:9092, host2:9092"``: the bootstrap servers as a user wrote them."""
    return bootstrap_servers if isinstance(bootstrap_servers, str) else ", ".join(bootstrap_servers)
