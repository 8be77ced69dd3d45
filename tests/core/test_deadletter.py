"""Dead-letter targets: every dead letter is on disk when flush() returns, for JSONL and Parquet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from shardline import StreamSink
from shardline.deadletter import DeadLetterWriter, dead_letter_entry
from shardline.errors import ConfigError
from shardline.faketransport import FAKE_LIMITS as LIMITS
from shardline.faketransport import FakeTransport


def entry(i: int) -> dict[str, Any]:
    """A dead letter for row ``i`` (its data is ``record-<i>``)."""
    record = {"data": f"record-{i}".encode(), "partition_key": f"key-{i}", "shard_id": 0, "row": i}
    return dead_letter_entry("mem://s", record, "InvalidArgument", "rejected by the stream")


def read_in_another_process(code: str, path: Path) -> Any:
    """Run ``code`` (which prints JSON, with ``path`` bound) in a fresh interpreter; return its output."""
    script = f"import json, sys\npath = sys.argv[1]\n{code}"
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def part_files(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if not p.name.startswith("."))


def test_jsonl_dead_letters_are_readable_by_another_process_after_flush(tmp_path: Path) -> None:
    target = tmp_path / "dead.jsonl"
    writer = DeadLetterWriter(target)
    for i in range(3):
        writer.write(entry(i))
    writer.flush()
    code = "print(json.dumps([json.loads(line)['row'] for line in open(path)]))"
    assert read_in_another_process(code, target) == [0, 1, 2]  # the writer is still open
    writer.close()


def test_parquet_dead_letters_are_readable_by_another_process_after_flush(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    writer = DeadLetterWriter(target)
    for i in range(3):
        writer.write(entry(i))
    writer.flush()
    code = "import pyarrow.parquet as pq\nprint(json.dumps(pq.read_table(path).column('row').to_pylist()))"
    assert read_in_another_process(code, target) == [0, 1, 2]  # the writer is still open
    writer.close()


def test_each_parquet_flush_is_one_part_file_and_readers_see_one_table_in_order(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    writer = DeadLetterWriter(target)
    for flush in range(4):
        for i in range(flush * 5, flush * 5 + 5):
            writer.write(entry(i))
        writer.flush()
    writer.close()
    names = part_files(target)
    assert len(names) == 4
    assert all(n.startswith("part-") and f"-{os.getpid()}-" in n and n.endswith(".parquet") for n in names)
    assert pq.read_table(target).column("row").to_pylist() == list(range(20))
    assert ds.dataset(target).to_table().column("data").to_pylist() == [f"record-{i}" for i in range(20)]


def test_parts_from_two_runs_read_back_in_run_order(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    for run in range(2):
        writer = DeadLetterWriter(target)
        writer.write(entry(run))
        writer.close()
    assert pq.read_table(target).column("row").to_pylist() == [0, 1]


def test_flush_with_nothing_pending_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    writer = DeadLetterWriter(target)
    assert writer.pending == 0
    writer.flush()
    assert not target.exists()  # no directory, no empty part
    writer.write(entry(0))
    writer.flush()
    writer.flush()
    assert len(part_files(target)) == 1  # the second flush had nothing to write
    writer.close()


def test_jsonl_flush_with_nothing_pending_does_not_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = DeadLetterWriter(tmp_path / "dead.jsonl")
    writer.write(entry(0))
    writer.flush()
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    writer.flush()
    assert calls == []
    writer.close()


def test_pending_counts_dead_letters_written_since_the_last_flush(tmp_path: Path) -> None:
    for name in ("dead.jsonl", "dead.parquet"):
        writer = DeadLetterWriter(tmp_path / name)
        writer.write(entry(0))
        writer.write(entry(1))
        assert writer.pending == 2, name
        writer.flush()
        assert writer.pending == 0, name
        assert writer.count == 2, name
        writer.close()


def test_close_after_flush_adds_no_empty_part_file(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    writer = DeadLetterWriter(target)
    writer.write(entry(0))
    writer.flush()
    writer.close()
    assert len(part_files(target)) == 1


def test_close_writes_the_rows_still_pending(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    writer = DeadLetterWriter(target)
    writer.write(entry(0))
    writer.close()
    assert pq.read_table(target).column("row").to_pylist() == [0]


def test_pending_rows_are_written_when_they_reach_the_row_group_size(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    writer = DeadLetterWriter(target, parquet_row_group=4)
    for i in range(10):
        writer.write(entry(i))
    assert writer.pending == 2  # memory holds at most one row group
    assert pq.read_table(target).num_rows == 8
    writer.close()
    assert pq.read_table(target).column("row").to_pylist() == list(range(10))


def test_an_old_single_file_parquet_target_is_refused_and_left_untouched(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    pq.write_table(pa.Table.from_pylist([entry(7)]), target)
    before = target.read_bytes()
    with pytest.raises(ConfigError, match=r"single Parquet file.*move that file away"):
        DeadLetterWriter(target)
    assert target.read_bytes() == before


def test_readers_skip_a_temporary_part_left_by_a_crash(tmp_path: Path) -> None:
    target = tmp_path / "dead.parquet"
    writer = DeadLetterWriter(target)
    writer.write(entry(0))
    writer.close()
    (target / ".part-20260101T000000.000000Z-1-000001.parquet.tmp").write_bytes(b"PAR1 half a file")
    assert pq.read_table(target).column("row").to_pylist() == [0]
    assert ds.dataset(target).to_table().num_rows == 1


@pytest.mark.parametrize("name", ["dead.jsonl", "dead.parquet"])
def test_the_sink_acks_a_batch_only_after_its_dead_letters_are_on_disk(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    seen_at_ack: list[int] = []

    def on_ack() -> None:  # what a source committing now could rely on
        if name.endswith(".jsonl"):
            seen_at_ack.append(len(target.read_bytes().splitlines()))
        else:
            seen_at_ack.append(pq.read_table(target).num_rows)

    too_big = b"\xff" * (LIMITS.max_record_bytes + 1)
    batch = pa.record_batch({"payload": [b"ok", too_big, b"ok", too_big], "k": ["a", "b", "c", "d"]})
    acked = threading.Event()
    with StreamSink(
        FakeTransport(shard_count=2), data="raw", data_column="payload", partition_key="k", dead_letter=target
    ) as sink:
        sink.write(batch, ack=lambda: (on_ack(), acked.set()))
        sink.flush()
        assert acked.is_set()
    assert seen_at_ack == [2]
