"""Sample event data for demos, tests and benchmarks, written in bounded memory.

Each row is an event of one of ``users`` users: ``seq`` (a global row number, so per-user order can
be checked after delivery), ``user_id``, ``kind``, ``amount``, ``ts`` and ``payload`` (random hex
characters, ``payload_bytes`` long, to reach a realistic, poorly compressible size).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("view", "click", "cart", "purchase")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _payload(rng: np.random.Generator, rows: int, width: int) -> pa.Array:
    if width == 0:
        return pa.array([""] * rows, type=pa.string())
    chars = _HEX[rng.integers(0, 16, size=rows * width, dtype=np.uint8)]
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def sample_batch(
    start: int, rows: int, *, users: int = 1000, payload_bytes: int = 32, seed: int = 0
) -> pa.RecordBatch:
    """Rows ``start`` .. ``start + rows - 1`` of the sample dataset (deterministic for a seed)."""
    rng = np.random.default_rng([seed, start])
    seq = np.arange(start, start + rows, dtype=np.int64)
    user = rng.integers(0, users, size=rows)
    return pa.RecordBatch.from_pydict(
        {
            "seq": seq,
            "user_id": pa.array(np.char.add("user-", user.astype(str))),
            "kind": pa.array(np.asarray(KINDS)[rng.integers(0, len(KINDS), size=rows)]),
            "amount": np.round(rng.random(rows) * 100, 2),
            "ts": pa.array(1_700_000_000_000 + seq, type=pa.timestamp("ms")),
            "payload": _payload(rng, rows, payload_bytes),
        }
    )


def write_sample(
    directory: str | os.PathLike[str],
    rows: int,
    *,
    files: int = 4,
    row_group_size: int = 50_000,
    users: int = 1000,
    payload_bytes: int = 32,
    seed: int = 0,
) -> list[Path]:
    """Write ``rows`` sample events into ``files`` Parquet files under ``directory``; return their paths.

    Memory stays bounded by ``row_group_size`` whatever ``rows`` is. Files are named
    ``part-00000.parquet``, ... so that their sorted order is the ``seq`` order.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // files) if rows else 0
    paths = []
    start = 0
    for index in range(files):
        count = min(per_file, rows - start)
        if count <= 0:
            break
        path = out / f"part-{index:05d}.parquet"
        writer: pq.ParquetWriter | None = None
        try:
            end = start + count
            while start < end:
                n = min(row_group_size, end - start)
                batch = sample_batch(start, n, users=users, payload_bytes=payload_bytes, seed=seed)
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
                writer.write_batch(batch, row_group_size=row_group_size)
                start += n
        finally:
            if writer is not None:
                writer.close()
        paths.append(path)
    return paths
