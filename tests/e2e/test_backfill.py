"""Backfills end to end: `shardline run` killed with SIGKILL resumes with no gap; the example config runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from shardline.pipeline import run_pipeline
from shardline_parquet import write_sample
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import start_server

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
REPO = Path(__file__).resolve().parents[2]
BATCH = 500


def _stream_rows(stream: str) -> list[tuple[int, str, int]]:
    """(shard, user_id, seq) of every record, in shard sequence order."""
    out = []
    for shard, records in read_stream(stream).items():
        for record in records:
            row = json.loads(record.data)
            out.append((shard, row["user_id"], row["seq"]))
    return out


def _checkpoint_rows(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["source"]["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_backfill_then_resume_loses_nothing_and_duplicates_only_the_unacked_tail(
    tmp_path: Path,
) -> None:
    rows = 24_000
    write_sample(tmp_path / "data", rows, files=4, row_group_size=2_500, users=25)
    checkpoint = tmp_path / "backfill.ckpt"
    # 2% of records fail and are retried, one request in flight: slow enough to be killed mid-way
    with start_server(tmp_path / "store", fault_rate=0.02, fault_seed=3) as server:
        stream = f"{server.url}/bigdata/backfill"
        config = tmp_path / "backfill.toml"
        config.write_text(
            f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"
batch_size = {BATCH}

[sink]
stream = "{stream}"
create = {{ shards = 4 }}
limits = {{ max_in_flight_requests = 1, max_in_flight_bytes = 200000 }}

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{checkpoint}"
interval_s = 0.1
"""
        )
        proc = subprocess.Popen(
            [SHARDLINE, "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 180
            while _checkpoint_rows(checkpoint) < 4 * BATCH:
                assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
                assert time.monotonic() < deadline, "the checkpoint did not advance within 180 s"
                time.sleep(0.02)  # polling the checkpoint file, with a deadline
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        killed_at = _checkpoint_rows(checkpoint)
        assert 0 < killed_at < rows

        first = _stream_rows(stream)
    first_seqs = Counter(seq for _shard, _user, seq in first)
    assert max(first_seqs.values()) == 1  # one run alone writes each row once
    assert set(range(killed_at)) <= set(first_seqs)  # everything the checkpoint covers was written
    beyond = sorted(s for s in first_seqs if s >= killed_at)  # written, but not in the checkpoint

    # the same store behind a server without faults (on another port: the checkpoint still applies)
    with start_server(tmp_path / "store") as server:
        stream = f"{server.url}/bigdata/backfill"
        faster = ["sink.limits.max_in_flight_requests=16", "sink.limits.max_in_flight_bytes=16MiB"]
        summary = run_pipeline(config, [f"sink.stream={stream}", *faster])
        assert summary.rows_read == rows - killed_at  # resumed exactly at the checkpoint
        final = _stream_rows(stream)
    counts = Counter(seq for _shard, _user, seq in final)
    assert set(counts) == set(range(rows))  # every row is in the stream: no gap
    duplicates = sorted(s for s, n in counts.items() if n > 1)
    assert all(n <= 2 for n in counts.values())
    assert duplicates == beyond  # duplicates are exactly the rows written after the last checkpoint
    assert len(duplicates) <= 10 * BATCH  # the unacked tail: in-flight cap + one checkpoint interval

    per_user: dict[str, list[int]] = defaultdict(list)
    shards: dict[str, set[int]] = defaultdict(set)
    for shard, user, seq in final:
        per_user[user].append(seq)
        shards[user].add(shard)
    assert all(len(s) == 1 for s in shards.values())  # a key keeps its shard across runs
    for user, seqs in per_user.items():
        firsts = list(dict.fromkeys(seqs))  # first occurrence of each row, in stream order
        assert firsts == sorted(firsts), f"rows of {user} out of order"
    print(f"killed at {killed_at:,} acknowledged rows; {len(duplicates):,} rows written twice")


def test_the_example_backfill_runs_as_the_readme_says(stream_server_session: Any, tmp_path: Path) -> None:
    write_sample(tmp_path / ".shardline" / "demo" / "sample", 10_000, files=2, row_group_size=2_000)
    env = {**os.environ, "EVENTS_STREAM": f"{stream_server_session.url}/bigdata/readme-events"}
    proc = subprocess.run(
        [SHARDLINE, "run", str(REPO / "examples" / "backfill.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("shardline: 10,000 records, ")
    assert (tmp_path / ".shardline" / "events.ckpt").exists()
    records = read_stream(env["EVENTS_STREAM"])
    assert len(records) == 8  # create = { shards = 8 }
    assert sorted(json.loads(r.data)["seq"] for rs in records.values() for r in rs) == list(range(10_000))
    row = json.loads(next(r for rs in records.values() for r in rs).data)
    assert set(row) == {"seq", "user_id", "kind", "amount", "ts"}  # the projection of the example
