"""A default backfill killed with kill -9 re-sends no more than its byte cap lets be in flight.

The checkpoint is written after every acknowledged batch (coalesced), so what a resumed run sends
twice is what was in flight at the kill: at most ``max_in_flight_bytes / 2`` of encoded records
(the engine reserves a request body per queued byte) plus one source batch (acks are per batch).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from shardline.engine import EngineOptions
from shardline.pipeline import run_pipeline
from shardline.records import RecordMapping, map_columns, place
from shardline_parquet import write_sample
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import start_server
from shardline_v3io.wire import V3IO_WIRE

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
ROWS = 200_000
BATCH = 10_000  # the Parquet source's default batch_size
SHARDS = 4


def checkpoint_rows(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["source"]["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def in_flight_rows(data: Path) -> int:
    """The rows the default byte cap lets be sent and not yet checkpointed (see the module docstring)."""
    batch = pq.read_table(sorted(data.glob("*.parquet"))[0]).slice(0, 10_000).to_batches()[0]
    enc = place(
        map_columns(batch, RecordMapping(partition_key="user_id"), V3IO_WIRE.limits), SHARDS, wire=V3IO_WIRE
    )
    return int(EngineOptions().max_in_flight_bytes / 2 / (enc.nbytes / enc.num_records)) + BATCH


@pytest.mark.slow
def test_a_killed_default_backfill_resends_at_most_what_its_cap_holds(tmp_path: Path) -> None:
    write_sample(tmp_path / "data", ROWS, files=4, row_group_size=50_000, users=1000, payload_bytes=0)
    checkpoint = tmp_path / "backfill.ckpt"
    with start_server(tmp_path / "store") as server:
        stream = f"{server.url}/bigdata/resume-bound"
        config = tmp_path / "backfill.toml"
        config.write_text(
            f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"

[sink]
stream = "{stream}"
create = {{ shards = {SHARDS} }}

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{checkpoint}"
"""
        )  # every limit at its default: the bound under test is the default's
        proc = subprocess.Popen(
            [SHARDLINE, "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 180
            while checkpoint_rows(checkpoint) < ROWS // 4:
                assert proc.poll() is None, f"the run ended before a quarter was in: {proc.communicate()}"
                assert time.monotonic() < deadline, "a quarter of the rows was not in within 180 s"
                time.sleep(0.01)  # polling the checkpoint file, with a deadline
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed_at = checkpoint_rows(checkpoint)
        assert ROWS // 4 <= killed_at < ROWS
        summary = run_pipeline(config)
        assert summary.exit_code == 0 and summary.rows_read == ROWS - killed_at
        counts: Counter[int] = Counter()
        order: dict[str, list[int]] = defaultdict(list)
        for records in read_stream(stream).values():
            for record in records:
                row = json.loads(record.data)
                counts[row["seq"]] += 1
                order[row["user_id"]].append(row["seq"])
    assert set(counts) == set(range(ROWS))  # no gap
    for user, seqs in order.items():
        firsts = list(dict.fromkeys(seqs))
        assert firsts == sorted(firsts), f"rows of {user} out of order"
    duplicates = sum(n - 1 for n in counts.values())
    bound = in_flight_rows(tmp_path / "data")
    print(
        f"killed at {killed_at:,} checkpointed rows: {duplicates:,} rows sent twice; "
        f"in flight under the cap: <= {bound:,}"
    )
    assert duplicates <= bound
