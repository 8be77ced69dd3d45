"""``value_format = "json"``: Kafka values parsed into typed columns; bad values set aside.

Each value must be one JSON object. Its top-level fields become columns (types inferred per batch;
a field whose values do not share one type is kept as its JSON text), followed by the Kafka metadata
columns. A metadata column whose name a JSON field already uses gets the prefix ``kafka_``.
Values that are not a JSON object are returned apart, with their offsets and the parse error, for
the dead-letter target — never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa

from shardline_kafka.arrow import METADATA_COLUMNS

DeadLetterFn = Callable[[list[dict[str, Any]], str], None]
"""``dead_letter(rows, reason)``: durably record rows that cannot become stream records."""


def parse_json_values(
    batch: pa.RecordBatch, metadata: tuple[str, ...] = METADATA_COLUMNS
) -> tuple[pa.RecordBatch, list[dict[str, Any]]]:
    """Split ``batch`` (raw schema) into a parsed batch and the rows whose value is not a JSON object.

    The parsed batch holds the JSON fields, then the ``metadata`` columns.
    """
    values = batch.column("value").to_pylist()
    good: list[dict[str, Any]] = []
    keep: list[bool] = []
    bad_rows: list[tuple[int, str]] = []
    loads = orjson.loads
    for i, raw in enumerate(values):
        try:
            obj = loads(raw) if raw is not None else None
        except orjson.JSONDecodeError as exc:
            bad_rows.append((i, f"invalid JSON: {exc}"))
            keep.append(False)
            continue
        if not isinstance(obj, dict):
            bad_rows.append((i, f"value is a JSON {type(obj).__name__}, not an object"))
            keep.append(False)
            continue
        good.append(obj)
        keep.append(True)
    bad = [_dead_row(batch, i, error) for i, error in bad_rows]
    meta = batch.filter(pa.array(keep)) if bad else batch
    fields = _columns(good)
    arrays = list(fields.values())
    names = list(fields)
    for name in metadata:
        names.append(f"kafka_{name}" if name in fields else name)
        arrays.append(meta.column(name))
    return pa.RecordBatch.from_arrays(arrays, names=names), bad


def _columns(rows: list[dict[str, Any]]) -> dict[str, pa.Array]:
    """Column per top-level field (first-seen order); missing fields are nulls."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    out: dict[str, pa.Array] = {}
    for name in names:
        column = [row.get(name) for row in rows]
        try:
            out[name] = pa.array(column)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            out[name] = pa.array(
                [None if v is None else orjson.dumps(v).decode() for v in column], pa.string()
            )
    return out


def dead_letter_entries(rows: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
    """Rows from :func:`parse_json_values` as shardline dead-letter entries (the sink's format).

    ``stream`` names the Kafka origin (``kafka:TOPIC[PARTITION]``) and ``row`` holds the offset, so
    the entry keeps where the record came from in JSONL and Parquet alike; JSONL lines also carry
    ``topic``, ``partition`` and ``offset`` fields.
    """
    from shardline import dead_letter_entry

    out = []
    for row in rows:
        key = row["key"]
        record = {
            "data": row["value"] or b"",
            "partition_key": key.decode("utf-8", "replace") if key is not None else None,
            "row": row["offset"],
        }
        entry = dead_letter_entry(f"kafka:{row['topic']}[{row['partition']}]", record, row["error"], reason)
        entry.update(topic=row["topic"], partition=row["partition"], offset=row["offset"])
        out.append(entry)
    return out


def dead_rows(batch: pa.RecordBatch, mask: pa.Array, error: str) -> list[dict[str, Any]]:
    """The rows of ``batch`` (raw schema) where ``mask`` is true, as dead-letter rows with ``error``."""
    picked = batch.filter(mask).select(["topic", "partition", "offset", "key", "value", "timestamp"])
    rows: list[dict[str, Any]] = picked.to_pylist()
    for row in rows:
        row["error"] = error
    return rows


def _dead_row(batch: pa.RecordBatch, i: int, error: str) -> dict[str, Any]:
    row = {
        name: batch.column(name)[i].as_py()
        for name in ("topic", "partition", "offset", "key", "value", "timestamp")
    }
    row["error"] = error
    return row
