"""The source contract that every source plugin implements.

A source yields ``(pyarrow.RecordBatch, AckToken)`` pairs. The pipeline hands each batch to the
sink and calls :meth:`Source.ack` with the batch's token once the sink has written (or
dead-lettered) every record of it; acks arrive in the order the batches were yielded. The source
commits progress only on ack (Kafka: offsets; Parquet: a checkpoint), and :meth:`Source.checkpoint`
returns a small JSON-serialisable dict from which a new instance resumes.

A source declares the shape of that dict with a ``Checkpoint`` model (a :class:`SourceCheckpoint`
subclass: strict, unknown keys are errors). The pipeline validates a loaded checkpoint against it
(:meth:`Source.validate_checkpoint`) before constructing the source, so a hand-edited or damaged
file (``"source": {}``, a negative row offset, a string where a number belongs) is refused with a
one-line :class:`~shardline.CheckpointError` naming the file and the field, instead of silently
restarting or skipping. Checks that need the data (does the file still exist?) stay in the
constructor, which raises :class:`~shardline.CheckpointError` too::

    class HttpPollCheckpoint(shardline.SourceCheckpoint):
        cursor: str = Field(min_length=1)
        pages: int = Field(ge=0)

    class HttpPollSource(shardline.Source):
        Options = HttpPollOptions
        Checkpoint = HttpPollCheckpoint

Two optional class-level declarations tell the pipeline about the batches a source yields:

- :meth:`Source.default_mapping`: the ``[mapping]`` its batches naturally want (Kafka: the key as
  PartitionKey, the value as Data byte for byte). A pipeline file without a ``[mapping]`` table uses
  it; a ``[mapping]`` table replaces it as a whole (no per-key merge); ``--set mapping.KEY=...``
  on a file without ``[mapping]`` changes that key of the source default.
- :attr:`Source.origin_columns`: the columns that say where a row came from (Kafka: topic,
  partition, offset, key). The sink copies those present in a batch into every dead letter of a
  row of it (the entry's ``origin``), so a record the stream refuses can be traced to its source.
  A position that is not a column (Parquet's file, row group and row) comes from
  :meth:`Source.origin` instead; both are merged into the one ``origin``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

AckToken = Any
"""Opaque, source-defined token that identifies a yielded batch (e.g. partition offsets)."""

DeadLetterFn = Callable[[list[dict[str, Any]], str], None]
"""``dead_letter(rows, reason)``: durably record source rows that cannot become stream records."""


@dataclass(frozen=True)
class SourceGauge:
    """One sample of a gauge a source reports (:meth:`Source.gauges`), e.g. the lag of one partition.

    ``name`` is lower_snake_case and names the system, not shardline (``"kafka_consumer_lag"``,
    ``"parquet_rows_done"``); a metrics exporter publishes it as ``shardline_<name>``, so use
    Prometheus's conventions (a unit suffix such as ``_seconds`` or ``_bytes`` where there is a unit).
    ``labels`` (``{"topic": "orders", "partition": "3"}``) must have the same keys in every sample of
    one name. ``help`` is the one-line description shown with the metric (give it on every sample).
    """

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    help: str = ""


class SourceOptions(BaseModel):
    """Base of every source's options model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class SourceCheckpoint(BaseModel):
    """Base of every source's checkpoint model: strict types (no ``"5"`` for 5), unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Source(abc.ABC):
    """A resumable producer of Arrow record batches.

    Subclasses set ``Options`` to a :class:`SourceOptions` subclass validating their config table,
    ``Checkpoint`` to a :class:`SourceCheckpoint` subclass describing what :meth:`checkpoint`
    returns (recommended; without one a loaded checkpoint is handed over unchecked), and implement
    :meth:`batches`, :meth:`ack` and :meth:`checkpoint`.
    """

    Options: ClassVar[type[SourceOptions]] = SourceOptions
    Checkpoint: ClassVar[type[BaseModel] | None] = None

    origin_columns: ClassVar[tuple[str, ...]] = ()
    """Columns of this source's batches that say where a row came from (e.g. ``("file", "row")``).

    Those present in a batch are copied into the ``origin`` of each dead letter of its rows;
    missing ones are left out. Empty (the default): dead letters carry only the row number.
    """

    def __init__(self, options: SourceOptions, checkpoint: dict[str, Any] | None = None) -> None:
        self.options = options
        self.resume_from = checkpoint
        self._stopping = False
        self._flush: Callable[[], None] | None = None
        self._dead_letter: DeadLetterFn | None = None

    @abc.abstractmethod
    def batches(self) -> Iterator[tuple[pa.RecordBatch, AckToken]]:
        """Yield record batches with their ack tokens until the source is exhausted or stopped."""

    @abc.abstractmethod
    def ack(self, token: AckToken) -> None:
        """Mark everything up to and including the batch of ``token`` as durably written."""

    @abc.abstractmethod
    def checkpoint(self) -> dict[str, Any]:
        """A small JSON-serialisable state covering only acknowledged batches."""

    def stop(self) -> None:
        """Ask :meth:`batches` to return soon (called from another thread on SIGINT/SIGTERM)."""
        self._stopping = True

    def set_flush(self, flush: Callable[[], None] | None) -> None:
        """Receive a function that makes the sink deliver, and ack, everything written so far.

        The pipeline calls this once, before :meth:`batches`. A source that must hand work over
        (Kafka, when partitions are revoked in a rebalance) calls it from its own threads, never
        while it is inside a ``write`` of the sink; most sources ignore it.
        """
        self._flush = flush

    def set_dead_letter(self, dead_letter: DeadLetterFn | None) -> None:
        """Receive the pipeline's dead-letter function for rows the source cannot turn into a batch.

        ``dead_letter(rows, reason)`` writes each row (a dict; ``value``/``data``, ``key``, ``error``
        and any position such as ``offset`` are kept) to the sink's dead-letter target and counts it
        in the run's dead letters; it has written them durably when it returns, so the source may
        then commit past them. Called once, before :meth:`batches`.
        """
        self._dead_letter = dead_letter

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    @classmethod
    def validate_checkpoint(cls, state: dict[str, Any]) -> dict[str, Any]:
        """Check a loaded checkpoint state before the source is constructed from it; return the state.

        The default validates ``state`` against :attr:`Checkpoint` (when set) and returns the model's
        JSON dump; without a model it returns ``state`` as is. Override it for checks a model cannot
        express. Raise :class:`pydantic.ValidationError` (from a model) or ``ValueError``: the
        pipeline turns either into a one-line :class:`~shardline.CheckpointError` naming the
        checkpoint file and the field.
        """
        if cls.Checkpoint is None:
            return state
        return cls.Checkpoint.model_validate(state).model_dump(mode="json")

    @classmethod
    def resume_identity(cls, options: SourceOptions) -> dict[str, Any]:
        """The options a checkpoint of this source depends on (default: all of them).

        The pipeline stores a digest of this (with the target stream) in the checkpoint and refuses
        to resume from a checkpoint with another digest. Leave out options that do not move
        positions (e.g. a batch size), so changing them keeps the checkpoint usable.
        """
        return options.model_dump(mode="json")

    @classmethod
    def preflight(cls, options: SourceOptions) -> str | None:
        """Check, before anything is sent, what a run would refuse that options alone cannot show.

        ``shardline validate`` calls this (a run makes the same checks when the source is made):
        e.g. Parquet opens every file's footer and checks columns and filter against them. Raise a
        :class:`~shardline.ShardlineError` with the same one-line message a run gives; return an
        optional one-line summary (``"3 files; 12,000 rows"``). Must not connect anywhere slow or
        send anything. Default: nothing to check.
        """
        return None

    @classmethod
    def schema(cls, options: SourceOptions) -> pa.Schema | None:
        """The Arrow schema of the batches this source will yield, when known without reading data.

        ``shardline validate`` and ``run`` check the ``[[transform]]`` steps against it before
        anything is sent (Parquet: the unified schema of the files' footers; Kafka with raw values:
        its fixed columns). Default None: not known up front (e.g. JSON values whose fields each batch
        infers), and the steps are checked against each batch as it comes. Must not connect anywhere.
        """
        return None

    def origin(self, token: AckToken) -> Callable[[int], dict[str, Any]] | None:
        """Where each row of the batch of ``token`` came from, for the sink's dead letters.

        Return ``where(row) -> dict`` (row numbers of the yielded batch; e.g. Parquet:
        ``{"file", "row_group", "row", "file_row"}``); a dead letter then holds it as ``origin``.
        Called once per batch by the pipeline's reader thread; the default (None) adds nothing.
        """
        return None

    @classmethod
    def default_mapping(cls, options: SourceOptions) -> dict[str, Any] | None:
        """The ``[mapping]`` table this source's batches naturally want, or None (the built-in default).

        Keys and values are those of a pipeline file's ``[mapping]`` (``partition_key``, ``data``,
        ``data_column``, ...), e.g. ``{"partition_key": "key", "data": "raw", "data_column":
        "value"}``. Used when the pipeline file has no ``[mapping]`` table; a ``[mapping]`` table
        replaces it as a whole. ``shardline validate`` and the run's start line say which was used.
        """
        return None

    def progress(self) -> dict[str, Any]:
        """Optional progress facts for the display.

        Known keys: ``total_rows`` (rows the whole run will yield, when known up front, e.g. from
        Parquet metadata) and ``done_rows`` (rows already acknowledged by earlier runs, when
        resuming), ``skipped`` (``{kind: count}`` of records read and deliberately not yielded, e.g.
        ``{"tombstones": 3}``; the run's summary line shows them). Called from another thread; must
        be cheap.
        """
        return {}

    def gauges(self) -> list[SourceGauge]:
        """Optional gauges for metrics exporters, read when they are scraped (e.g. Kafka lag per partition).

        Called from another thread, at each scrape; must be cheap and must not block on I/O.
        Default: none.
        """
        return []

    def not_ready(self) -> str | None:
        """Why the source is not ready to read now, in one line, or None when it is (``/readyz``).

        Kafka: the consumer is not connected yet. Called from another thread; must be cheap.
        Default: always ready.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release resources (connections, file handles)."""
