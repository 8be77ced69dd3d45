"""`shardline run` killed with SIGKILL while it dead-letters: no dead letter behind the checkpoint is lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline_v3io.testing import read_stream, start_stream_server

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
ROWS = 600
BAD_EVERY = 7  # every 7th row has a partition key over 256 bytes: the stream can never take it
BAD = {seq for seq in range(ROWS) if seq % BAD_EVERY == 3}


def _write_source(directory: Path) -> None:
    """600 rows in 3 files (sorted names = seq order); the rows in BAD have a 300-byte key."""
    directory.mkdir()
    for index in range(3):
        seqs = list(range(index * 200, index * 200 + 200))
        keys = [("x" * 300 + str(s)) if s in BAD else f"user-{s % 4}" for s in seqs]
        pq.write_table(pa.table({"seq": seqs, "user_id": keys}), directory / f"part-{index}.parquet")


def _checkpoint_rows(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["source"]["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _dead_seqs(target: Path) -> set[int]:
    """The seq of every dead letter in the Parquet target (a directory of part files)."""
    if not target.exists():
        return set()
    return {json.loads(data)["seq"] for data in pq.read_table(target).column("data").to_pylist()}


def _kill_when_checkpoint_reaches(config: Path, checkpoint: Path, rows: int) -> int:
    """Run the pipeline, SIGKILL it once the checkpoint covers ``rows`` rows; return the rows it covers."""
    proc = subprocess.Popen([SHARDLINE, "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _checkpoint_rows(checkpoint) < rows:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, f"the checkpoint did not reach {rows} rows within 120 s"
            time.sleep(0.01)  # polling the checkpoint file, with a deadline
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return _checkpoint_rows(checkpoint)


@pytest.mark.slow
def test_sigkill_while_dead_lettering_loses_no_dead_letter_behind_the_checkpoint(tmp_path: Path) -> None:
    _write_source(tmp_path / "data")
    checkpoint = tmp_path / "run.ckpt"
    dead = tmp_path / "dead.parquet"
    # one small batch in flight at a time, 30% of records failed and retried: slow enough to kill
    with start_stream_server(tmp_path / "store", fault_rate=0.3, fault_seed=5) as server:
        stream = f"{server.url}/bigdata/dead-kill"
        config = tmp_path / "pipeline.toml"
        config.write_text(
            f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"
batch_size = 5

[sink]
stream = "{stream}"
create = {{ shards = 2 }}
dead_letter = "{dead}"
limits = {{ max_in_flight_requests = 1, max_in_flight_bytes = 1000, linger_ms = 10 }}

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{checkpoint}"
interval_s = 0.05
"""
        )
        killed_at = []
        for rows in (100, 250, 400):  # three kills at different moments, each resuming the last
            covered = _kill_when_checkpoint_reaches(config, checkpoint, rows)
            assert covered < ROWS, "the run was killed after the end: nothing tested"
            behind = {seq for seq in BAD if seq < covered}
            missing = behind - _dead_seqs(dead)
            assert not missing, f"killed at {covered} rows: dead letters {sorted(missing)} were lost"
            killed_at.append(covered)

        last = subprocess.run(
            [SHARDLINE, "run", "--allow-dead-letters", str(config)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert last.returncode == 0, last.stderr
        in_stream = {json.loads(r.data)["seq"] for rs in read_stream(stream).values() for r in rs}

    assert _dead_seqs(dead) == BAD  # every dead letter at least once, and nothing else
    assert in_stream == set(range(ROWS)) - BAD  # every good row is in the stream
    assert all(name.name.startswith("part-") for name in dead.iterdir() if not name.name.startswith("."))
    print(f"killed at {killed_at} checkpointed rows; {len(list(dead.iterdir()))} dead-letter part files")
