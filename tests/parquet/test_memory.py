"""Memory is bounded by the batch, not by the row group: a huge row group is streamed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

_READ = """
import json, sys
from shardline_parquet import ParquetOptions, ParquetSource

def peak_kib():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, from fork)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

source = ParquetSource(ParquetOptions(path=sys.argv[1], batch_size=10_000))
before = peak_kib()
rows = 0
for batch, token in source.batches():
    rows += batch.num_rows
    source.ack(token)
print(json.dumps({"rows": rows, "before_kib": before, "peak_kib": peak_kib()}))
"""


def _one_row_group(path: Path, rows: int) -> float:
    """Write ``rows`` rows of ~670 bytes (8 int64 columns, 600 random bytes) as one row group; its MiB."""
    rng = np.random.default_rng(7)
    columns = {f"c{i}": pa.array(rng.integers(0, 2**62, rows)) for i in range(8)}
    offsets = pa.array(np.arange(0, 600 * rows + 1, 600, dtype=np.int32)).buffers()[1]
    blob = pa.py_buffer(rng.bytes(600 * rows))
    columns["payload"] = pa.BinaryArray.from_buffers(pa.binary(), rows, [None, offsets, blob])
    pq.write_table(pa.table(columns), path, row_group_size=rows, compression="none")
    return float(pq.read_metadata(path).row_group(0).total_byte_size / 2**20)


def _peak_growth_mib(path: Path, rows: int) -> float:
    """Peak RSS a subprocess adds while it reads ``path`` through the source (batch_size 10,000)."""
    command = [sys.executable, "-c", _READ, str(path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["rows"] == rows
    return float(facts["peak_kib"] - facts["before_kib"]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS is read from /proc")
def test_a_row_group_three_times_larger_does_not_take_three_times_the_memory(tmp_path: Path) -> None:
    small_mib = _one_row_group(tmp_path / "small.parquet", 100_000)
    large_mib = _one_row_group(tmp_path / "large.parquet", 300_000)
    assert 60 < small_mib < 70 and 190 < large_mib < 210
    small = _peak_growth_mib(tmp_path / "small.parquet", 100_000)
    large = _peak_growth_mib(tmp_path / "large.parquet", 300_000)
    # Read whole (as the dataset scanner did), these row groups add +146 and +405 MiB; streamed,
    # +80 and +99 MiB: pyarrow's fixed overhead, about the same whatever the row group's size.
    facts = f"row groups of {small_mib:.0f} and {large_mib:.0f} MiB: +{small:.0f} and +{large:.0f} MiB"
    assert large - small < (large_mib - small_mib) / 4, facts
    assert large < large_mib * 3 / 4, facts
