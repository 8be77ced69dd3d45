"""The Parquet source: files, directories and globs, streamed ``batch_size`` rows at a time.

Files
    ``path`` is a file, a directory (searched recursively), a glob (``data/**/*.parquet``) or a
    list of these; names starting with ``.`` or ``_`` below what you wrote are skipped, hive
    ``key=value`` directories become columns (see :mod:`shardline_parquet.discovery`). Files are
    read in sorted path order.

Plan
    When the source is made (and in ``shardline validate``, through :meth:`ParquetSource.preflight`)
    every file's footer is read and one schema is built; columns, filter and types are checked
    against it before anything is sent (see :mod:`shardline_parquet.plan`). A column a file lacks
    reads as null there. A runner that builds many sources (shardline-dask) computes the plan once
    (:meth:`ParquetSource.make_plan`) and gives it to each (``plan=``; :meth:`Plan.spread` splits
    it over files).

Reading
    Each row group is streamed with ``ParquetFile.iter_batches``: memory is bounded by
    ``batch_size`` and the sink's in-flight cap, not by the size of a row group, a file or the
    dataset. A filter prunes whole files by their partition values and row groups by their
    statistics; what is left is filtered batch by batch.

Positions and checkpoints
    Every batch carries a :class:`ParquetAckToken`: file, row group, and the row of that row group
    the next read starts at (a physical row number, so it does not depend on the filter). The
    checkpoint is the position just after the last *acknowledged* batch, so a run that is killed
    resumes there: nothing is skipped, and what was in flight is sent again (at-least-once). It
    names the file by absolute path, by its path below the root (which keeps the partition
    directories) and by its partition values; adding files that sort before it is not noticed.

Dead letters
    :meth:`ParquetSource.origin` tells the pipeline where each row of a batch came from: ``file``,
    ``row_group``, ``row`` (inside the row group) and ``file_row`` (inside the file).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field, ValidationError, field_validator
from shardline import (
    CheckpointError,
    ShardlineError,
    Source,
    SourceCheckpoint,
    SourceGauge,
    SourceOptions,
    describe_state_errors,
)

from shardline_parquet.discovery import discover
from shardline_parquet.filters import FilterSyntaxError, compile_filter, filter_columns
from shardline_parquet.plan import Plan, PlannedFile, file_error, make_plan
from shardline_parquet.reader import Piece, read_row_group

CHECKPOINT_FORMAT = 2
"""2: ``row_offset`` is a row number of the row group (format 1 counted rows that passed the filter)."""


class ParquetOptions(SourceOptions):
    """Options of ``[source] type = "parquet"``."""

    path: str | list[str] = Field(description="a file, directory or glob, or a list of them")
    columns: list[str] | None = Field(None, description="columns to send (default: all)")
    filter: str | list[Any] | None = Field(None, description="row filter: expression string or DNF list")
    partitioning: Literal["hive", "none"] | list[str] = Field(
        "hive", description='partition directories: "hive" (key=value), "none", or a list of column names'
    )
    batch_size: int = Field(10_000, ge=1, description="rows per batch handed to the sink")
    buffer_size: int = Field(1 << 20, ge=4096, description="bytes of the buffered read stream per column")

    @field_validator("path")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        paths = [value] if isinstance(value, str) else value
        if not paths or not all(p.strip() for p in paths):
            raise ValueError("expected a non-empty path (file, directory or glob)")
        return value

    @field_validator("filter")
    @classmethod
    def _valid_filter(cls, value: str | list[Any] | None) -> str | list[Any] | None:
        try:
            compile_filter(value)
        except FilterSyntaxError as exc:
            raise ValueError(f"invalid filter: {exc}") from None
        return value

    @field_validator("partitioning")
    @classmethod
    def _valid_partitioning(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or len(set(value)) != len(value) or not all(value)):
            raise ValueError('expected "hive", "none" or a non-empty list of distinct column names')
        return value


class ParquetCheckpoint(SourceCheckpoint):
    """What :meth:`ParquetSource.checkpoint` returns: the position after the last acknowledged batch.

    ``file`` is None once everything was read and acknowledged.
    """

    format: int | None = Field(None, ge=1, description="checkpoint format (2: row_offset is a row number)")
    file: str | None = Field(description="absolute path of the file to resume in")
    relative: str | None = Field(None, description="that file's path under the dataset root")
    partition: dict[str, Any] | None = Field(None, description="that file's partition values")
    file_index: int = Field(ge=0, description="index of that file in the sorted list (informational)")
    row_group: int = Field(ge=0, description="row group of that file to resume at")
    row_offset: int = Field(ge=0, description="row of that row group to resume at")
    rows: int = Field(ge=0, description="rows acknowledged by every run so far")


@dataclass(frozen=True, slots=True)
class ParquetAckToken:
    """Position just after one yielded batch.

    ``row_offset`` is the row of ``row_group`` the next read starts at; ``end_of_row_group`` is
    True for the last batch of the row group. ``row_numbers`` holds each row's row number inside
    the row group (for dead letters).
    """

    file_index: int
    row_group: int
    row_offset: int
    rows: int
    nbytes: int
    end_of_row_group: bool
    row_numbers: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, np.int64), compare=False, repr=False
    )


def build_plan(options: ParquetOptions) -> Plan:
    """Find the files, read every footer and check columns and filter (see :mod:`shardline_parquet.plan`)."""
    files = discover(options.path, options.partitioning)
    return make_plan(
        files,
        options.columns,
        compile_filter(options.filter),
        filter_columns(options.filter),
        options.filter,
    )


def resolve_paths(path: str | list[str]) -> list[str]:
    """Expand files, directories and globs into the sorted list of absolute data file paths."""
    return [f.path for f in discover(path)]


def _shown(path: str) -> str:
    """A path from a checkpoint, fit for a one-line message (quoted when odd, cut when long)."""
    text = path if path.isprintable() else repr(path)
    return text if len(text) <= 300 else text[:280] + f"... ({len(text):,} characters)"


class ParquetSource(Source):
    """Streams Parquet files row group by row group; resumable from (file, row group, row)."""

    Options = ParquetOptions
    Checkpoint = ParquetCheckpoint
    options: ParquetOptions

    def __init__(
        self, options: ParquetOptions, checkpoint: dict[str, Any] | None = None, *, plan: Plan | None = None
    ) -> None:
        super().__init__(options, checkpoint)
        self._plan = plan if plan is not None else build_plan(options)
        self._files = [f.path for f in self._plan.files]
        self._lock = threading.Lock()
        self._start = self._resume_position(checkpoint)
        self._acked = self._start
        self._done_rows_at_start = int((checkpoint or {}).get("rows", 0))
        self._acked_rows = self._done_rows_at_start

    # -- the contract ---------------------------------------------------------------------------

    @classmethod
    def preflight(cls, options: SourceOptions) -> str:
        """Everything ``run`` checks before sending (files, footers, columns, filter); a summary line."""
        assert isinstance(options, ParquetOptions)
        return build_plan(options).summary()

    @classmethod
    def schema(cls, options: SourceOptions) -> pa.Schema:
        """The columns the batches will have (``columns``, or all), typed from the files' footers."""
        assert isinstance(options, ParquetOptions)
        plan = build_plan(options)
        return pa.schema([plan.schema.field(name) for name in plan.columns])

    @classmethod
    def make_plan(cls, options: SourceOptions) -> Plan:
        """The plan of ``options`` (every footer read once), to build many sources with ``plan=``:
        a runner computes it on its driver and ships it (it pickles) to its workers."""
        assert isinstance(options, ParquetOptions)
        return build_plan(options)

    @classmethod
    def resume_identity(cls, options: SourceOptions) -> dict[str, Any]:
        """Everything but ``batch_size`` and ``buffer_size``: they do not move positions."""
        return options.model_dump(mode="json", exclude={"batch_size", "buffer_size"})

    @property
    def files(self) -> list[str]:
        """The files this source reads, in order."""
        return list(self._files)

    @property
    def plan(self) -> Plan:
        """The files with their footers, the unified schema, the output columns and the filter."""
        return self._plan

    def batches(self) -> Iterator[tuple[pa.RecordBatch, ParquetAckToken]]:
        """Yield ``(batch, token)`` from the resume position to the end (or until :meth:`stop`)."""
        start_file, start_rg, start_row = self._start
        kept = self._plan.kept_files()
        for file_index in range(start_file, len(self._plan.files)):
            planned = self._plan.files[file_index]
            if planned.path not in kept:
                continue  # its partition values exclude every row
            first_rg = start_rg if file_index == start_file else 0
            for row_group in self._row_groups(planned, first_rg):
                skip = start_row if (file_index == start_file and row_group == start_rg) else 0
                yield from self._row_group(file_index, planned, row_group, skip)
                if self.stopping:
                    return

    def ack(self, token: ParquetAckToken) -> None:
        """Record that the batch of ``token`` (and every earlier one) is durably written."""
        if token.end_of_row_group:
            position = (token.file_index, token.row_group + 1, 0)
        else:
            position = (token.file_index, token.row_group, token.row_offset)
        with self._lock:
            self._acked = position
            self._acked_rows += token.rows

    def checkpoint(self) -> dict[str, Any]:
        """The position after the last acknowledged batch (JSON-serialisable)."""
        with self._lock:
            file_index, row_group, row_offset = self._acked
            rows = self._acked_rows
        planned = self._plan.files[file_index] if file_index < len(self._plan.files) else None
        return {
            "format": CHECKPOINT_FORMAT,
            "file": planned.path if planned else None,
            "relative": planned.relative if planned else None,
            "partition": dict(planned.partition) if planned else None,
            "file_index": file_index,
            "row_group": row_group,
            "row_offset": row_offset,
            "rows": rows,
        }

    def origin(self, token: ParquetAckToken) -> Callable[[int], dict[str, Any]]:
        """Where row ``i`` of the batch of ``token`` came from: file, row group, row, file row."""
        planned = self._plan.files[token.file_index]
        group_start = planned.first_row(token.row_group)

        def where(i: int) -> dict[str, Any]:
            row = int(token.row_numbers[i])
            return {
                "file": planned.path,
                "row_group": token.row_group,
                "row": row,
                "file_row": group_start + row,
            }

        return where

    def progress(self) -> dict[str, Any]:
        """``total_rows`` from the files' footers (when there is no filter) and ``done_rows``."""
        facts: dict[str, Any] = {"done_rows": self._done_rows_at_start, "files": len(self._files)}
        if self._plan.filter is None:
            facts["total_rows"] = self._plan.num_rows
        return facts

    def gauges(self) -> list[SourceGauge]:
        """``parquet_rows_done`` (rows acknowledged, earlier runs included) and, without a filter,
        ``parquet_rows_total`` (rows of every file, from the footers)."""
        with self._lock:
            done = self._acked_rows
        out = [SourceGauge("parquet_rows_done", done, help="Rows acknowledged, by this and earlier runs.")]
        if self._plan.filter is None:
            out.append(
                SourceGauge("parquet_rows_total", self._plan.num_rows, help="Rows of every file to read.")
            )
        return out

    # -- internals ------------------------------------------------------------------------------

    def _row_groups(self, planned: PlannedFile, first: int) -> list[int]:
        """Row groups of ``planned`` from ``first`` on that the filter's statistics do not exclude."""
        groups = list(range(first, len(planned.row_group_rows)))
        if self._plan.filter is None or not groups:
            return groups
        try:
            fragment = ds.ParquetFileFormat().make_fragment(
                planned.path,
                filesystem=pafs.LocalFileSystem(),
                partition_expression=self._plan.guarantee(planned),
            )
            pieces = fragment.split_by_row_group(filter=self._plan.filter, schema=self._plan.schema)
            kept = {p.row_groups[0].id for p in pieces}
        except (OSError, pa.ArrowException, ValueError, TypeError):
            return groups  # pruning is an optimisation; the filter is applied to every row anyway
        return [g for g in groups if g in kept]

    def _row_group(
        self, file_index: int, planned: PlannedFile, row_group: int, skip: int
    ) -> Iterator[tuple[pa.RecordBatch, ParquetAckToken]]:
        pending: Piece | None = None  # one batch of lookahead, to mark the row group's last
        for piece in self._sized(self._read(planned, row_group, skip)):
            if pending is not None:
                yield pending.batch, self._token(file_index, row_group, pending, False)
                if self.stopping:
                    return
            pending = piece
        if pending is not None:
            yield pending.batch, self._token(file_index, row_group, pending, True)

    @staticmethod
    def _token(file_index: int, row_group: int, piece: Piece, last: bool) -> ParquetAckToken:
        batch = piece.batch
        next_row = int(piece.rows[-1]) + 1
        return ParquetAckToken(
            file_index, row_group, next_row, batch.num_rows, batch.nbytes, last, piece.rows
        )

    def _read(self, planned: PlannedFile, row_group: int, skip: int) -> Iterator[Piece]:
        """The pieces of one row group; every pyarrow/OS error becomes a one-line error naming the file."""
        try:
            parquet_file = pq.ParquetFile(
                planned.path, buffer_size=self.options.buffer_size, pre_buffer=False
            )
        except (OSError, pa.ArrowException) as exc:
            raise file_error(planned.path, exc, "open") from None
        try:
            yield from read_row_group(
                parquet_file, planned, self._plan, row_group, skip, self.options.batch_size
            )
        except ShardlineError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise file_error(planned.path, exc, f"read row group {row_group} of") from None
        finally:
            parquet_file.close()

    def _sized(self, pieces: Iterator[Piece]) -> Iterator[Piece]:
        """Re-cut pieces to ``batch_size`` rows (a filter leaves small ones), keeping row order."""
        size = self.options.batch_size
        held: list[Piece] = []
        held_rows = 0
        for piece in pieces:
            if not held and piece.batch.num_rows == size:
                yield piece  # the common case without a filter: no copy
                continue
            held.append(piece)
            held_rows += piece.batch.num_rows
            while held_rows >= size:
                table = pa.Table.from_batches([p.batch for p in held])
                rows = np.concatenate([p.rows for p in held])
                yield Piece(_one_batch(table.slice(0, size)), rows[:size])
                rest = table.slice(size)
                held = [Piece(_one_batch(rest), rows[size:])] if rest.num_rows else []
                held_rows = rest.num_rows
        if held_rows:
            table = pa.Table.from_batches([p.batch for p in held])
            yield Piece(_one_batch(table), np.concatenate([p.rows for p in held]))

    def _resume_position(self, checkpoint: dict[str, Any] | None) -> tuple[int, int, int]:
        if checkpoint is None:
            return (0, 0, 0)
        try:
            state = ParquetCheckpoint.model_validate(checkpoint)
        except ValidationError as exc:
            raise CheckpointError(f"not a Parquet source checkpoint: {describe_state_errors(exc)}") from None
        if state.format is None and self.options.filter is not None and state.row_offset:
            raise CheckpointError(
                "the checkpoint was written by an older shardline-parquet, which counted a filter's rows "
                "differently; delete the checkpoint to start over"
            )
        if state.file is None:
            return (len(self._files), 0, 0)  # everything was read and acknowledged
        if state.file in self._files:
            index = self._files.index(state.file)
        else:
            same = [
                i
                for i, f in enumerate(self._plan.files)
                if state.relative is not None and f.relative == state.relative
            ]
            if len(same) != 1:
                raise CheckpointError(
                    f"the checkpoint stopped in {_shown(state.file)}, which source.path no longer matches; "
                    "delete the checkpoint to start over"
                )
            index = same[0]
        self._check_position(self._files[index], state)
        return (index, state.row_group, state.row_offset)

    def _check_position(self, path: str, state: ParquetCheckpoint) -> None:
        """Refuse a position past the end of its file or of its row group."""
        try:
            metadata = pq.read_metadata(path)
        except (OSError, pa.ArrowInvalid) as exc:
            why = f"the checkpoint stopped in {_shown(path)}, which cannot be read: {exc}"
            raise CheckpointError(why) from None
        groups = metadata.num_row_groups
        if state.row_group > groups or (state.row_group == groups and state.row_offset):
            raise CheckpointError(
                f"source.row_group: {state.row_group} (offset {state.row_offset}) is past the end of "
                f"{_shown(path)}, which has {groups} row groups; delete the checkpoint to start over"
            )
        # row_offset is a row number inside the row group (checkpoint format 2; older ones counted
        # filtered rows, which cannot be checked against the footer)
        if state.row_group < groups and (state.format is not None or self.options.filter is None):
            rows = metadata.row_group(state.row_group).num_rows
            if state.row_offset > rows:
                raise CheckpointError(
                    f"source.row_offset: {state.row_offset} is past the end of row group {state.row_group} "
                    f"of {_shown(path)}, which has {rows} rows; delete the checkpoint to start over"
                )


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_arrays(
        [table.column(i).combine_chunks() for i in range(table.num_columns)], schema=table.schema
    )
