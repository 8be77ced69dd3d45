"""`shardline run` against the real embedded server: delivery, dead letters, SIGINT/SIGTERM."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline.pipeline import run_pipeline
from shardline_parquet import write_sample
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import start_server

SHARDLINE = str(Path(sys.executable).with_name("shardline"))


def _pipeline(tmp_path: Path, data: Path, stream: str, **extra: str) -> Path:
    text = f"""
[source]
type = "parquet"
path = "{data}"
batch_size = {extra.get("batch_size", "2000")}

[sink]
stream = "{stream}"
create = {{ shards = 4 }}
dead_letter = "{tmp_path / "dead.jsonl"}"
{extra.get("sink", "")}

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{tmp_path / "run.ckpt"}"
interval_s = 0.1
"""
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def _rows(stream: str) -> tuple[list[int], dict[str, list[int]]]:
    """All seq values in the stream, and per user the seqs in stream (shard sequence) order."""
    seqs: list[int] = []
    per_user: dict[str, list[int]] = defaultdict(list)
    for records in read_stream(stream).values():
        for record in records:
            row = json.loads(record.data)
            seqs.append(row["seq"])
            per_user[row["user_id"]].append(row["seq"])
    return seqs, per_user


def _checkpoint_rows(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["source"]["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _wait_for_checkpoint(path: Path, proc: subprocess.Popen[str], at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _checkpoint_rows(path)
        if rows >= at_least:
            return rows
        assert proc.poll() is None, f"run ended early: {proc.communicate()}"
        time.sleep(0.02)  # polling the checkpoint file, with a deadline
    raise AssertionError(f"checkpoint {path} did not reach {at_least} rows within {timeout}s")


def test_backfill_delivers_every_row_once_in_per_key_order(
    stream_server_session: Any, tmp_path: Path
) -> None:
    write_sample(tmp_path / "data", 20_000, files=2, row_group_size=3_000, users=20)
    stream = f"{stream_server_session.url}/bigdata/pipeline-events"
    summary = run_pipeline(_pipeline(tmp_path, tmp_path / "data", stream))
    assert summary.records == summary.rows_acked == 20_000
    assert summary.exit_code == 0 and summary.dead_letters == 0
    assert summary.requests >= 20
    seqs, per_user = _rows(stream)
    assert sorted(seqs) == list(range(20_000))
    assert all(s == sorted(s) for s in per_user.values())


def test_dead_letters_fail_the_run_unless_allowed(stream_server_session: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    table = pa.table(
        {
            "seq": [0, 1, 2],
            "user_id": ["a", "b", "a"],
            "payload": ["x", "y" * (2 * 2**20), "z"],
        }  # row 1 > 1 MB
    )
    pq.write_table(table, data / "part.parquet")
    stream = f"{stream_server_session.url}/bigdata/pipeline-dlq"
    config = _pipeline(tmp_path, data, stream)
    proc = subprocess.run([SHARDLINE, "run", str(config)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "2 records, " in proc.stdout and "1 dead letters" in proc.stdout
    assert "dead-lettered" in proc.stderr and "--allow-dead-letters" in proc.stderr
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == 1
    assert sorted(json.loads(r.data)["seq"] for rs in read_stream(stream).values() for r in rs) == [0, 2]

    (tmp_path / "run.ckpt").unlink()
    summary = run_pipeline(config, allow_dead_letters=True)
    assert summary.dead_letters == 1 and summary.exit_code == 0


@pytest.mark.slow
def test_sigint_stops_at_once_and_a_second_run_completes_the_rest(tmp_path: Path) -> None:
    """The first signal stops retries at once: the checkpoint covers only rows in the stream; rows
    sent but not acknowledged when it came are sent again by the next run (at-least-once)."""
    sig, code = signal.SIGINT, 130
    rows = 20_000
    write_sample(tmp_path / "data", rows, files=3, row_group_size=5_000, users=30)
    # a slow server (2% of the records fail and are retried, one request in flight) keeps the run going
    with start_server(tmp_path / "store", fault_rate=0.02, fault_seed=7) as server:
        stream = f"{server.url}/bigdata/events"
        limits = "limits = { max_in_flight_requests = 1, max_in_flight_bytes = 200000 }"
        config = _pipeline(tmp_path, tmp_path / "data", stream, batch_size="500", sink=limits)
        proc = subprocess.Popen(
            [SHARDLINE, "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _wait_for_checkpoint(tmp_path / "run.ckpt", proc, at_least=1)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == code, err
        assert f"(stopped by {sig.name})" in out
        stopped_at = _checkpoint_rows(tmp_path / "run.ckpt")
        assert 0 < stopped_at < rows
        assert "run the same command again" in err
        seqs, _ = _rows(stream)
        first_run = collections.Counter(seqs)
        assert all(first_run[i] == 1 for i in range(stopped_at))  # the checkpoint covers written rows
        assert max(first_run.values()) == 1
        unacked = [i for i in first_run if i >= stopped_at]

    # the same store behind a server without faults, on another port; limits are not part of the
    # checkpoint's identity either
    with start_server(tmp_path / "store") as server:
        stream = f"{server.url}/bigdata/events"
        faster = ["sink.limits.max_in_flight_requests=16", "sink.limits.max_in_flight_bytes=16MiB"]
        summary = run_pipeline(config, [f"sink.stream={stream}", *faster])
        assert summary.records == rows - stopped_at
        seqs, per_user = _rows(stream)
    counts = collections.Counter(seqs)
    assert sorted(counts) == list(range(rows))  # every row
    assert sum(counts.values()) == rows + len(unacked)  # twice only what the stop left unacknowledged
    for values in per_user.values():
        firsts = list(dict.fromkeys(values))
        assert firsts == sorted(firsts)  # each user's first occurrences in order


def test_run_prints_a_one_line_summary_and_no_progress_bar_when_piped(
    stream_server_session: Any, tmp_path: Path
) -> None:
    write_sample(tmp_path / "data", 3_000, files=1)
    config = _pipeline(tmp_path, tmp_path / "data", f"{stream_server_session.url}/bigdata/pipeline-cli")
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [SHARDLINE, "run", str(config)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("shardline: 3,000 records, ")
    assert " 0 retries, 0 dead letters in " in line and line.endswith("records/s)")
    assert "\x1b[" not in proc.stdout  # no progress bar when stdout is not a terminal


def test_backfill_into_a_local_store_without_a_server(tmp_path: Path) -> None:
    write_sample(tmp_path / "data", 5_000, files=1)
    config = _pipeline(tmp_path, tmp_path / "data", f"local://{tmp_path / 'store'}/bigdata/local-events")
    summary = run_pipeline(config)
    assert summary.records == summary.rows_acked == 5_000 and summary.exit_code == 0
    assert (tmp_path / "store" / "shardline-store.json").exists()
    again = run_pipeline(config)
    assert again.records == 0 and again.resumed_rows == 5_000
