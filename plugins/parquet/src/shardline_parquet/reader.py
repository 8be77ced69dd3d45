"""Reading one row group of a planned file: streamed, filled out to the plan's schema, filtered.

A row group is read with ``ParquetFile.iter_batches(batch_size=..., row_groups=[i])``, which
decodes ``batch_size`` rows at a time: memory is bounded by the batch, not by the row group (the
dataset scanner materialises a whole row group before it slices it). Each piece comes with the
row number, inside the row group, of each of its rows, so positions stay exact under a filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from shardline_parquet.plan import Plan, PlannedFile

_ROW = "__shardline_row__"


@dataclass(frozen=True, slots=True)
class Piece:
    """Rows of one row group: the ``batch`` (the plan's output columns) and, per row, its row
    number inside the row group (``rows``, int64, ascending)."""

    batch: pa.RecordBatch
    rows: npt.NDArray[np.int64]


def read_row_group(
    parquet_file: pq.ParquetFile,
    planned: PlannedFile,
    plan: Plan,
    row_group: int,
    start: int,
    batch_size: int,
) -> Iterator[Piece]:
    """The non-empty pieces of ``row_group`` from its row ``start`` on (at most ``batch_size`` rows each).

    pyarrow errors propagate; the caller names the file.
    """
    needed = plan.needed()
    present = [name for name in needed if name in planned.schema.names]
    position = 0
    for raw in parquet_file.iter_batches(
        batch_size=batch_size, row_groups=[row_group], columns=present, use_threads=True
    ):
        first = position
        position += raw.num_rows
        if position <= start:
            continue  # before the resume position: decoded one batch at a time, then dropped
        if first < start:
            raw = raw.slice(start - first)
            first = start
        piece = _piece(raw, first, needed, planned, plan)
        if piece is not None:
            yield piece


def _piece(
    raw: pa.RecordBatch, first: int, needed: list[str], planned: PlannedFile, plan: Plan
) -> Piece | None:
    n = raw.num_rows
    arrays = [_column(raw, name, n, planned, plan) for name in needed]
    rows = np.arange(first, first + n, dtype=np.int64)
    if plan.filter is None:
        batch = pa.RecordBatch.from_arrays(arrays, names=needed)
        if needed != plan.columns:
            batch = batch.select(plan.columns)
        return Piece(batch, rows) if n else None
    table = pa.Table.from_arrays([*arrays, pa.array(rows)], names=[*needed, _ROW]).filter(plan.filter)
    if table.num_rows == 0:
        return None
    table = table.combine_chunks()
    kept = table.column(_ROW).to_numpy()
    batch = pa.RecordBatch.from_arrays(
        [table.column(name).chunk(0) for name in plan.columns], names=plan.columns
    )
    return Piece(batch, kept.astype(np.int64, copy=False))


def _column(raw: pa.RecordBatch, name: str, n: int, planned: PlannedFile, plan: Plan) -> pa.Array:
    target = plan.schema.field(name).type
    if name in plan.partition_columns:
        value = planned.partition.get(name)
        return pa.nulls(n, target) if value is None else pa.repeat(pa.scalar(value, target), n)
    index = raw.schema.get_field_index(name)
    if index < 0:
        return pa.nulls(n, target)  # a column this file does not have reads as null
    array = raw.column(index)
    return array if array.type == target else array.cast(target)
