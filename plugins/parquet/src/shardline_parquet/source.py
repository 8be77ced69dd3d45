"""The Parquet source: files, directories and globs, streamed row group by row group.

Reading
    ``path`` is a file, a directory (searched recursively, the way pyarrow.dataset discovers files:
    names starting with ``.`` or ``_`` are skipped), a glob (``data/**/*.parquet``) or a list of
    these. Files are read in sorted path order, each row group on its own, ``batch_size`` rows at a
    time, with pyarrow's buffered streams and no pre-buffering: memory is bounded by the batch size
    and the in-flight cap of the sink, not by the size of a file or of the dataset.

Projection and filters
    ``columns`` picks the columns to send; ``filter`` drops rows (see :mod:`shardline_parquet.filters`
    for the syntax). A filter may use columns that are not projected.

Positions and checkpoints
    Every batch carries a :class:`ParquetAckToken` (file, row group, row offset). The offset counts
    the rows of that row group that passed the filter. The checkpoint is the position just after the
    last *acknowledged* batch, so a run that is killed resumes there: nothing is skipped, and what
    was in flight but not acknowledged is sent again (at-least-once). Files are identified by their
    absolute path; adding files that sort before the checkpoint's file is not noticed.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field, ValidationError, field_validator
from shardline.checkpoint import describe_state_errors
from shardline.errors import CheckpointError, ConfigError, SchemaError
from shardline.source import Source, SourceCheckpoint, SourceOptions

from shardline_parquet.filters import FilterSyntaxError, compile_filter

_GLOB_CHARS = set("*?[")


class ParquetOptions(SourceOptions):
    """Options of ``[source] type = "parquet"``."""

    path: str | list[str] = Field(description="a file, directory or glob, or a list of them")
    columns: list[str] | None = Field(None, description="columns to send (default: all)")
    filter: str | list[Any] | None = Field(None, description="row filter: expression string or DNF list")
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


class ParquetCheckpoint(SourceCheckpoint):
    """What :meth:`ParquetSource.checkpoint` returns: the position after the last acknowledged batch.

    ``file`` is None once everything was read and acknowledged.
    """

    file: str | None = Field(description="absolute path of the file to resume in")
    file_index: int = Field(ge=0, description="index of that file in the sorted list (informational)")
    row_group: int = Field(ge=0, description="row group of that file to resume at")
    row_offset: int = Field(ge=0, description="filtered rows of that row group already acknowledged")
    rows: int = Field(ge=0, description="rows acknowledged by every run so far")


@dataclass(frozen=True, slots=True)
class ParquetAckToken:
    """Position just after one yielded batch.

    ``row_offset`` counts the filtered rows of ``row_group`` yielded so far, this batch included;
    ``end_of_row_group`` is True for the last batch of the row group.
    """

    file_index: int
    row_group: int
    row_offset: int
    rows: int
    nbytes: int
    end_of_row_group: bool


def resolve_paths(path: str | list[str]) -> list[str]:
    """Expand files, directories and globs into a sorted, de-duplicated list of absolute file paths."""
    files: set[str] = set()
    for entry in [path] if isinstance(path, str) else path:
        expanded = os.path.expanduser(entry)
        if _GLOB_CHARS & set(expanded):
            matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
            if not matches:
                raise ConfigError(f"source.path: {entry!r} matches no files")
            files.update(os.path.abspath(m) for m in matches)
        elif os.path.isdir(expanded):
            found = ds.dataset(expanded, format="parquet").files
            if not found:
                raise ConfigError(f"source.path: directory {entry!r} holds no Parquet files")
            files.update(os.path.abspath(f) for f in found)
        elif os.path.isfile(expanded):
            files.add(os.path.abspath(expanded))
        else:
            raise ConfigError(f"source.path: no such file or directory: {entry!r}")
    return sorted(files)


def _shown(path: str) -> str:
    """A path from a checkpoint, fit for a one-line message (quoted when odd, cut when long)."""
    text = path if path.isprintable() else repr(path)
    return text if len(text) <= 300 else text[:280] + f"... ({len(text):,} characters)"


class ParquetSource(Source):
    """Streams Parquet files row group by row group; resumable from (file, row group, row offset)."""

    Options = ParquetOptions
    Checkpoint = ParquetCheckpoint
    options: ParquetOptions

    def __init__(self, options: ParquetOptions, checkpoint: dict[str, Any] | None = None) -> None:
        super().__init__(options, checkpoint)
        self._files = resolve_paths(options.path)
        self._filter = compile_filter(options.filter)
        self._format = ds.ParquetFileFormat(
            default_fragment_scan_options=ds.ParquetFragmentScanOptions(
                use_buffered_stream=True, buffer_size=options.buffer_size, pre_buffer=False
            )
        )
        self._fs = pafs.LocalFileSystem()
        self._lock = threading.Lock()
        self._start = self._resume_position(checkpoint)
        self._acked = self._start
        self._done_rows_at_start = int((checkpoint or {}).get("rows", 0))
        self._acked_rows = self._done_rows_at_start
        self._total_rows: int | None = None
        self._schema_checked = False

    # -- the contract ---------------------------------------------------------------------------

    @classmethod
    def resume_identity(cls, options: SourceOptions) -> dict[str, Any]:
        """Everything but ``batch_size`` and ``buffer_size``: they do not move positions."""
        return options.model_dump(mode="json", exclude={"batch_size", "buffer_size"})

    @property
    def files(self) -> list[str]:
        """The files this source reads, in order."""
        return list(self._files)

    def batches(self) -> Iterator[tuple[pa.RecordBatch, ParquetAckToken]]:
        """Yield ``(batch, token)`` from the resume position to the end (or until :meth:`stop`)."""
        start_file, start_rg, start_offset = self._start
        for file_index in range(start_file, len(self._files)):
            fragment = self._format.make_fragment(self._files[file_index], filesystem=self._fs)
            self._check_columns(fragment, self._files[file_index])
            for rg_fragment in fragment.split_by_row_group():
                row_group = rg_fragment.row_groups[0].id
                if file_index == start_file and row_group < start_rg:
                    continue
                skip = start_offset if (file_index == start_file and row_group == start_rg) else 0
                yield from self._row_group(file_index, row_group, rg_fragment, skip)
                if self.stopping:
                    return
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
        file = self._files[file_index] if file_index < len(self._files) else None
        return {
            "file": file,
            "file_index": file_index,
            "row_group": row_group,
            "row_offset": row_offset,
            "rows": rows,
        }

    def progress(self) -> dict[str, Any]:
        """``total_rows`` from the files' metadata (when there is no filter) and ``done_rows``."""
        facts: dict[str, Any] = {"done_rows": self._done_rows_at_start, "files": len(self._files)}
        if self._filter is None:
            if self._total_rows is None:
                self._total_rows = sum(pq.read_metadata(f).num_rows for f in self._files)
            facts["total_rows"] = self._total_rows
        return facts

    # -- internals ------------------------------------------------------------------------------

    def _row_group(
        self, file_index: int, row_group: int, fragment: ds.ParquetFileFragment, skip: int
    ) -> Iterator[tuple[pa.RecordBatch, ParquetAckToken]]:
        offset = skip  # filtered rows of this row group consumed so far (skipped or yielded)
        pending: pa.RecordBatch | None = None  # one batch of lookahead, to mark the row group's last
        for batch in self._sized(self._scan(fragment, skip)):
            if pending is not None:
                offset += pending.num_rows
                token = ParquetAckToken(
                    file_index, row_group, offset, pending.num_rows, pending.nbytes, False
                )
                yield pending, token
                if self.stopping:
                    return
            pending = batch
        if pending is not None:
            offset += pending.num_rows
            yield (
                pending,
                ParquetAckToken(file_index, row_group, offset, pending.num_rows, pending.nbytes, True),
            )

    def _scan(self, fragment: ds.ParquetFileFragment, skip: int) -> Iterator[pa.RecordBatch]:
        """The filtered, projected, non-empty batches of one row group, after its first ``skip`` rows."""
        scanned = fragment.to_batches(
            columns=self.options.columns,
            filter=self._filter,
            batch_size=self.options.batch_size,
            batch_readahead=0,
            fragment_readahead=0,
            use_threads=True,
        )
        for batch in scanned:
            if skip:
                if batch.num_rows <= skip:
                    skip -= batch.num_rows
                    continue
                batch = batch.slice(skip)
                skip = 0
            if batch.num_rows:
                yield batch

    def _sized(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Re-cut batches to ``batch_size`` rows (a filter leaves small ones), keeping row order."""
        size = self.options.batch_size
        held: list[pa.RecordBatch] = []
        held_rows = 0
        for batch in batches:
            if not held and batch.num_rows == size:
                yield batch  # the common case without a filter: no copy
                continue
            held.append(batch)
            held_rows += batch.num_rows
            while held_rows >= size:
                table = pa.Table.from_batches(held)
                yield table.slice(0, size).combine_chunks().to_batches()[0]
                rest = table.slice(size)
                held = rest.combine_chunks().to_batches() if rest.num_rows else []
                held_rows = rest.num_rows
        if held_rows:
            yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]

    def _check_columns(self, fragment: ds.ParquetFileFragment, path: str) -> None:
        if self._schema_checked or not self.options.columns:
            return
        names = set(fragment.physical_schema.names)
        missing = [c for c in self.options.columns if c not in names]
        if missing:
            raise SchemaError(
                f"source.columns: {', '.join(map(repr, missing))} not in {path} "
                f"(its columns: {', '.join(sorted(names))})"
            )
        self._schema_checked = True

    def _resume_position(self, checkpoint: dict[str, Any] | None) -> tuple[int, int, int]:
        if checkpoint is None:
            return (0, 0, 0)
        try:
            state = ParquetCheckpoint.model_validate(checkpoint)
        except ValidationError as exc:
            raise CheckpointError(f"not a Parquet source checkpoint: {describe_state_errors(exc)}") from None
        if state.file is None:
            return (len(self._files), 0, 0)  # everything was read and acknowledged
        if state.file not in self._files:
            raise CheckpointError(
                f"the checkpoint stopped in {_shown(state.file)}, which source.path no longer matches; "
                "delete the checkpoint to start over"
            )
        self._check_position(state)
        return (self._files.index(state.file), state.row_group, state.row_offset)

    def _check_position(self, state: ParquetCheckpoint) -> None:
        """Refuse a position past the end of its file (or, without a filter, of its row group)."""
        assert state.file is not None
        try:
            metadata = pq.read_metadata(state.file)
        except (OSError, pa.ArrowInvalid) as exc:
            why = f"the checkpoint stopped in {_shown(state.file)}, which cannot be read: {exc}"
            raise CheckpointError(why) from None
        groups = metadata.num_row_groups
        if state.row_group > groups or (state.row_group == groups and state.row_offset):
            raise CheckpointError(
                f"source.row_group: {state.row_group} (offset {state.row_offset}) is past the end of "
                f"{_shown(state.file)}, which has {groups} row groups; delete the checkpoint to start over"
            )
        if state.row_group < groups and self._filter is None:
            rows = metadata.row_group(state.row_group).num_rows
            if state.row_offset > rows:
                raise CheckpointError(
                    f"source.row_offset: {state.row_offset} is past the end of row group {state.row_group} "
                    f"of {_shown(state.file)}, which has {rows} rows; delete the checkpoint to start over"
                )
