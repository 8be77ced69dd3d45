"""A 1 M-row, 4-file backfill on a 2-worker LocalCluster into the real embedded server.

Every row lands once (or, after a kill, at least once with duplicates bounded by what was in
flight), each key's rows in source order, every key on one shard: as in one process. Kills are
real ``kill -9`` of a worker process (Dask runs its task again elsewhere) and of the driver (a
``shardline run --dask`` subprocess); waits poll checkpoint files with deadlines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from shardline import CheckpointError
from shardline.engine import EngineOptions
from shardline.pipeline import RunSummary, run_pipeline
from shardline.records import RecordMapping, map_columns, place
from shardline_parquet import write_sample
from shardline_v3io.testing_server import RunningServer
from shardline_v3io.wire import V3IO_WIRE

from .conftest import ROWS, SHARDS, landed, pipeline_file, slot_rows

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
BATCH = 10_000  # the Parquet source's default batch_size


def in_flight_rows(data: Path) -> int:
    """The most rows one slot can have sent but not checkpointed under the default byte cap:
    what the cap admits (it reserves a request body per queued byte, so half of it holds
    records) plus one source batch (acks are per batch)."""
    batch = pq.read_table(sorted(data.glob("*.parquet"))[0], columns=["seq", "user_id"]).slice(0, 10_000)
    mapping = RecordMapping(partition_key="user_id", data="template", template="{seq}")
    enc = place(map_columns(batch.to_batches()[0], mapping, V3IO_WIRE.limits), SHARDS, wire=V3IO_WIRE)
    per_record = enc.nbytes / enc.num_records
    return int(EngineOptions().max_in_flight_bytes / 2 / per_record) + BATCH


def address(cluster: Any) -> list[str]:
    return [f"engine.address={cluster.scheduler.address}"]


def wait_for(what: str, condition: Any, deadline_s: float = 240.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {deadline_s:.0f} s"
        time.sleep(0.05)  # polling checkpoint files, with a deadline


def test_a_two_worker_backfill_lands_every_row_once_in_key_order(
    cluster: Any, server: RunningServer, dataset: Path, tmp_path: Path
) -> None:
    stream = f"{server.url}/bigdata/dask-once"
    summary = run_pipeline(pipeline_file(tmp_path, dataset, stream), address(cluster))
    assert summary.exit_code == 0, summary.problems()
    assert summary.records == ROWS
    assert summary.rows_read == 2 * ROWS  # each slot reads everything and writes its shards' rows
    assert summary.metrics["read_amplification"] == 2.0
    assert all(n > ROWS // 4 for n in summary.metrics["slot_records"].values())  # both slots wrote
    result = landed(stream)
    result.check(ROWS)
    assert result.duplicates == 0
    again = run_pipeline(pipeline_file(tmp_path, dataset, stream), address(cluster))
    assert again.records == 0 and again.rows_read == 0  # a finished backfill sends nothing
    print(
        f"read amplification {summary.metrics['read_amplification']:.1f}; "
        f"records per slot {summary.metrics['slot_records']}"
    )


@pytest.mark.slow
def test_b_a_worker_killed_mid_run_is_retried_and_resumes_its_slot(
    cluster: Any, server: RunningServer, dataset: Path, tmp_path: Path
) -> None:
    stream = f"{server.url}/bigdata/dask-worker-kill"
    config = pipeline_file(tmp_path, dataset, stream)
    checkpoint = tmp_path / "state" / "backfill.ckpt"
    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome["summary"] = run_pipeline(config, address(cluster))
        except BaseException as exc:
            outcome["error"] = exc

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    wait_for("a slot checkpoint past a quarter", lambda: max(slot_rows(checkpoint), default=0) >= ROWS // 4)
    busy = {w: keys for w, keys in cluster.processing().items() if keys}
    victim = next(iter(busy))
    pid = cluster.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    driver.join(timeout=300)
    assert not driver.is_alive(), "the run did not end within 300 s of the kill"
    assert "error" not in outcome, outcome.get("error")
    summary: RunSummary = outcome["summary"]
    assert summary.exit_code == 0, summary.problems()
    assert summary.resumed_rows > 0  # the retried slot went on from its checkpoint
    result = landed(stream)
    result.check(ROWS)
    bound = in_flight_rows(dataset)
    print(f"after a worker kill: {result.duplicates:,} duplicates; in flight under the cap: <= {bound:,}")
    assert result.duplicates <= bound


@pytest.mark.slow
def test_c_the_driver_killed_mid_run_resumes_every_slot(
    cluster: Any, server: RunningServer, dataset: Path, tmp_path: Path
) -> None:
    stream = f"{server.url}/bigdata/dask-driver-kill"
    config = pipeline_file(tmp_path, dataset, stream)
    checkpoint = tmp_path / "state" / "backfill.ckpt"
    proc = subprocess.Popen(
        [SHARDLINE, "run", str(config), "--dask", cluster.scheduler.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            "the slot checkpoints past a quarter",
            lambda: proc.poll() is None and sum(slot_rows(checkpoint)) >= ROWS // 2,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.communicate()
    killed_at = slot_rows(checkpoint)
    assert len(killed_at) == 2 and all(n < ROWS for n in killed_at)
    summary = run_pipeline(config, address(cluster))  # the dead run's slots end; this one resumes them
    assert summary.exit_code == 0, summary.problems()
    assert summary.resumed_rows > 0
    assert summary.rows_read <= 2 * ROWS - sum(killed_at)  # each slot resumed at its checkpoint
    result = landed(stream)
    result.check(ROWS)
    bound = 2 * in_flight_rows(dataset)
    print(f"after a driver kill: {result.duplicates:,} duplicates; in flight under the cap: <= {bound:,}")
    assert result.duplicates <= bound


def test_split_files_reads_each_file_once_and_lands_every_row_once(
    cluster: Any, server: RunningServer, tmp_path: Path
) -> None:
    rows = 40_000
    write_sample(tmp_path / "data", rows, files=4, row_group_size=5_000, payload_bytes=0)
    stream = f"{server.url}/bigdata/dask-files"
    config = pipeline_file(tmp_path, tmp_path / "data", stream, split="files")
    summary = run_pipeline(config, address(cluster))
    assert summary.exit_code == 0, summary.problems()
    assert summary.rows_read == rows  # each file read once, by one slot
    assert summary.metrics["read_amplification"] == 1.0
    assert all(n == rows // 2 for n in summary.metrics["slot_records"].values())  # 2 files each
    result = landed(stream)
    assert set(result.counts) == set(range(rows)) and result.duplicates == 0


def test_a_resume_with_another_split_is_refused(cluster: Any, server: RunningServer, tmp_path: Path) -> None:
    write_sample(tmp_path / "data", 1_000, files=2, payload_bytes=0)
    stream = f"{server.url}/bigdata/dask-resplit"
    run_pipeline(pipeline_file(tmp_path, tmp_path / "data", stream), address(cluster))
    with pytest.raises(CheckpointError, match="split = 'shards'"):
        run_pipeline(pipeline_file(tmp_path, tmp_path / "data", stream, split="files"), address(cluster))
