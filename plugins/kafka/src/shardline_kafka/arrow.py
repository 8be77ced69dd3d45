"""Kafka poll results -> Arrow record batches, built a column at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

HEADER_TYPE = pa.list_(pa.struct([pa.field("key", pa.string()), pa.field("value", pa.binary())]))

SCHEMA = pa.schema(
    [
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("headers", HEADER_TYPE),
    ]
)
"""Columns of every batch the source yields in ``value_format = "raw"``."""

METADATA_COLUMNS = ("key", "topic", "partition", "offset", "timestamp", "headers")


def records_to_batch(parts: Sequence[tuple[str, int, Sequence[Any]]]) -> pa.RecordBatch:
    """One batch from ``(topic, partition, records)`` parts, in the order given.

    ``records`` are kafka-python ``ConsumerRecord``s. Columns are built from lists (one pass per
    field); topic and partition are repeated per part without a per-row Python loop.
    """
    records = [r for _t, _p, recs in parts for r in recs]
    counts = np.fromiter((len(recs) for _t, _p, recs in parts), dtype=np.int64, count=len(parts))
    n = len(records)
    topics = pa.array([t for t, _p, _r in parts], pa.string())
    topic_col = topics.take(pa.array(np.repeat(np.arange(len(parts), dtype=np.int32), counts)))
    partition_col = pa.array(
        np.repeat(np.fromiter((p for _t, p, _r in parts), dtype=np.int32, count=len(parts)), counts)
    )
    offsets = pa.array(np.fromiter((r.offset for r in records), dtype=np.int64, count=n))
    stamps = np.fromiter((r.timestamp for r in records), dtype=np.int64, count=n)
    timestamp_col = pa.array(stamps, pa.timestamp("ms", tz="UTC"), mask=stamps < 0)
    keys = pa.array([r.key for r in records], pa.binary())
    values = pa.array([r.value for r in records], pa.binary())
    return pa.RecordBatch.from_arrays(
        [
            keys,
            values,
            topic_col,
            partition_col,
            offsets,
            timestamp_col,
            _headers([r.headers for r in records]),
        ],
        schema=SCHEMA,
    )


def _headers(headers: list[Any]) -> pa.Array:
    """The headers column: list<struct<key: string, value: binary>>, empty lists where none."""
    if not any(headers):
        return pa.ListArray.from_arrays(
            pa.array(np.zeros(len(headers) + 1, dtype=np.int32)),
            pa.array([], HEADER_TYPE.value_type),
        )
    return pa.array([[{"key": k, "value": v} for k, v in (h or ())] for h in headers], HEADER_TYPE)
