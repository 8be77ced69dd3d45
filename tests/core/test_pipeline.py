"""The pipeline runner's own logic, with a tiny in-test sink (the real one: test_pipeline_server.py).

The fake sink here only decides *when* batches are acknowledged, which is what the runner's
checkpoint and stop logic depends on.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from shardline.checkpoint import CheckpointLock, CheckpointLockedError
from shardline.config import build_pipeline
from shardline.errors import CheckpointError, DeliveryError
from shardline.pipeline import Runner, RunSummary, run_pipeline
from shardline_parquet import write_sample

ROWS = 6_000


class _Metrics:
    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0
        self.dead_letters = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bytes": self.bytes,
            "requests": 0,
            "retries": 0,
            "dead_letters": self.dead_letters,
        }


class FakeSink:
    """Acks the first ``ack_limit`` batches (all when None), in order, from another thread."""

    def __init__(self, ack_limit: int | None = None, on_write: Callable[[int], None] | None = None) -> None:
        self.metrics = _Metrics()
        self.batches: list[pa.RecordBatch] = []
        self.ack_limit = ack_limit
        self.on_write = on_write
        self.kwargs: dict[str, Any] = {}
        self.closed = False
        self.flushes = 0
        self.dead_lettered: list[tuple[dict[str, Any], str]] = []

    def __call__(self, stream: str, **kwargs: Any) -> FakeSink:  # the sink factory
        self.kwargs = kwargs
        return self

    def write(self, batch: pa.RecordBatch, ack: Callable[[], None] | None = None) -> None:
        self.batches.append(batch)
        self.metrics.records += batch.num_rows
        self.metrics.bytes += batch.nbytes
        if ack is not None and (self.ack_limit is None or len(self.batches) <= self.ack_limit):
            thread = threading.Thread(target=ack)
            thread.start()
            thread.join()
        if self.on_write is not None:
            self.on_write(len(self.batches))

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def dead_letter(self, records: list[dict[str, Any]], reason: str) -> None:
        self.dead_lettered += [(r, reason) for r in records]
        self.metrics.dead_letters += len(records)

    def close(self, timeout: float | None = None) -> None:
        self.closed = True
        if self.ack_limit is not None and len(self.batches) > self.ack_limit:
            raise DeliveryError("gave up (test)")

    def seqs(self) -> list[int]:
        return [s for b in self.batches for s in b.column("seq").to_pylist()]


@pytest.fixture
def events(tmp_path: Path) -> Path:
    write_sample(tmp_path / "events", ROWS, files=2, row_group_size=1_000)
    return tmp_path / "events"


def _config(events: Path, tmp_path: Path, **checkpoint: Any) -> Any:
    return build_pipeline(
        {
            "source": {"type": "parquet", "path": str(events), "batch_size": 250},
            "sink": {"stream": "http://127.0.0.1:1/bigdata/test", "create": {"shards": 2}},
            "mapping": {"partition_key": "user_id"},
            "checkpoint": {"path": str(tmp_path / "run.ckpt"), **checkpoint},
        },
        origin="test.toml",
    )


def _checkpoint(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "run.ckpt").read_text())["source"]


def test_a_full_run_sends_every_row_once_and_checkpoints_the_end(events: Path, tmp_path: Path) -> None:
    sink = FakeSink()
    summary = run_pipeline(_config(events, tmp_path), sink_factory=sink)
    assert sink.seqs() == list(range(ROWS))
    assert summary.records == summary.rows_acked == summary.rows_read == ROWS
    assert summary.exit_code == 0
    assert sink.closed
    assert _checkpoint(tmp_path)["rows"] == ROWS
    assert sink.kwargs["partition_key"] == "user_id"
    assert sink.kwargs["create"] == {"shards": 2, "retention_hours": 24}


def test_a_second_run_after_a_complete_one_sends_nothing(events: Path, tmp_path: Path) -> None:
    run_pipeline(_config(events, tmp_path), sink_factory=FakeSink())
    again = FakeSink()
    summary = run_pipeline(_config(events, tmp_path), sink_factory=again)
    assert again.batches == []
    assert summary.records == 0
    assert summary.resumed_rows == ROWS
    assert summary.line().endswith(f"(resumed after {ROWS:,} rows acknowledged earlier)")


def test_the_checkpoint_never_covers_unacknowledged_batches(events: Path, tmp_path: Path) -> None:
    sink = FakeSink(ack_limit=5)
    with pytest.raises(DeliveryError):
        run_pipeline(_config(events, tmp_path), sink_factory=sink)
    assert len(sink.batches) == ROWS // 250  # everything was written...
    assert _checkpoint(tmp_path)["rows"] == 5 * 250  # ...but only five batches were acknowledged
    resumed = FakeSink()
    run_pipeline(_config(events, tmp_path), sink_factory=resumed)
    assert resumed.seqs() == list(range(5 * 250, ROWS))


def test_stop_delivers_what_was_read_checkpoints_it_and_the_next_run_resumes(
    events: Path, tmp_path: Path
) -> None:
    runner: Runner | None = None

    def stop_after(n: int) -> None:
        if n == 7 and runner is not None:
            runner.stop("SIGTERM")

    sink = FakeSink(on_write=stop_after)
    runner = Runner(_config(events, tmp_path), sink_factory=sink)
    summary = runner.run()
    assert summary.stopped_by == "SIGTERM"
    assert summary.exit_code == 143  # stopped is not finished
    assert "run the same command again" in summary.problems()[0]
    assert 7 <= len(sink.batches) <= 8  # stops within a batch
    assert _checkpoint(tmp_path)["rows"] == summary.rows_acked == len(sink.batches) * 250
    rest = FakeSink()
    run_pipeline(_config(events, tmp_path), sink_factory=rest)
    assert sink.seqs() + rest.seqs() == list(range(ROWS))  # no gap, no duplicate


def test_sigterm_is_handled_like_stop_and_the_handlers_are_restored(events: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)

    runner: Runner | None = None

    def send_sigterm(n: int) -> None:
        if n == 3 and runner is not None:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the runner in the main thread
            deadline = time.monotonic() + 30
            while runner._stop.signal_name is None and time.monotonic() < deadline:
                time.sleep(0.01)  # wait (with a deadline) until the main thread ran the handler

    sink = FakeSink(on_write=send_sigterm)
    runner = Runner(_config(events, tmp_path), sink_factory=sink)
    summary = runner.run(handle_signals=True)
    assert summary.stopped_by == "SIGTERM"
    assert summary.exit_code == 143
    assert len(sink.batches) < ROWS // 250
    assert _checkpoint(tmp_path)["rows"] == summary.rows_acked == len(sink.batches) * 250
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_failing_source_keeps_the_acknowledged_progress(events: Path, tmp_path: Path) -> None:
    config = _config(events, tmp_path)
    original = config.source_cls.batches
    calls = {"n": 0}

    def broken(self: Any) -> Any:
        for item in original(self):
            calls["n"] += 1
            if calls["n"] == 4:
                raise OSError("disk on fire")
            yield item

    config.source_cls.batches = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError, match="disk on fire"):
            run_pipeline(config, sink_factory=FakeSink())
    finally:
        config.source_cls.batches = original  # type: ignore[method-assign]
    assert _checkpoint(tmp_path)["rows"] == 3 * 250


def test_exit_codes() -> None:
    assert RunSummary().exit_code == 0
    assert RunSummary(dead_letters=2).exit_code == 1
    assert RunSummary(dead_letters=2, allow_dead_letters=True).exit_code == 0
    assert RunSummary(stopped_by="SIGINT").exit_code == 130
    assert RunSummary(stopped_by="SIGTERM").exit_code == 143  # a stopped run has not finished
    assert RunSummary(stopped_by="stop()").exit_code == 1
    line = RunSummary(records=1500, bytes=2048, requests=3, retries=1, dead_letters=0, seconds=2.0).line()
    assert line == (
        "shardline: 1,500 records, 2.0 KiB, 3 requests, 1 retries, 0 dead letters in 2.0 s (750 records/s)"
    )
    assert "--allow-dead-letters" in RunSummary(dead_letters=2, dead_letter_target="d.jsonl").problems()[0]


def test_progress_bar_only_when_asked_or_on_a_terminal() -> None:
    import io

    from rich.console import Console
    from shardline.progress import NullDisplay, RichDisplay, make_display

    assert isinstance(make_display(False, "parquet", {"total_rows": 10}), NullDisplay)
    assert isinstance(make_display(None, "parquet", {}), NullDisplay)  # pytest's stdout is not a terminal
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    display = make_display(True, "parquet", {"total_rows": 1_000_000, "done_rows": 1000}, console=console)
    assert isinstance(display, RichDisplay)
    display.update(250_000, 3 * 2**20)
    display.close()
    assert "250,000/1,000,000 rows" in out.getvalue()
    assert "3.0 MiB" in out.getvalue()


def test_the_source_is_handed_the_sinks_flush(
    events: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardline_parquet.source import ParquetSource

    original = ParquetSource.batches

    def batches_that_flush(self: ParquetSource) -> Any:  # as Kafka does before giving partitions up
        for item in original(self):
            yield item
            assert self._flush is not None
            self._flush()

    monkeypatch.setattr(ParquetSource, "batches", batches_that_flush)
    sink = FakeSink()
    run_pipeline(_config(events, tmp_path), sink_factory=sink)
    assert sink.flushes == len(sink.batches) > 0


def test_rows_a_source_cannot_use_reach_the_sinks_dead_letters_and_the_summary(
    events: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardline_parquet.source import ParquetSource

    original = ParquetSource.batches

    def batches_with_a_bad_row(self: ParquetSource) -> Any:  # as Kafka does with unparsable JSON
        assert self._dead_letter is not None
        bad = {"topic": "t", "partition": 2, "offset": 41, "key": b"ann", "value": b"{nope", "error": "bad"}
        self._dead_letter([bad], "value is not a JSON object")
        yield from original(self)

    monkeypatch.setattr(ParquetSource, "batches", batches_with_a_bad_row)
    sink = FakeSink()
    summary = run_pipeline(_config(events, tmp_path), sink_factory=sink)
    [(record, reason)] = sink.dead_lettered
    assert reason == "value is not a JSON object"
    assert record["data"] == b"{nope" and record["partition_key"] == "ann" and record["row"] == 41
    assert record["error"] == "bad (topic t, partition 2, offset 41)"
    assert summary.dead_letters == 1 and summary.exit_code == 1


# -- the checkpoint lock and the checkpoint's contents ----------------------------------------------


def test_a_run_refuses_while_another_holds_the_checkpoint_lock_and_opens_no_sink(
    events: Path, tmp_path: Path
) -> None:
    sink = FakeSink()
    held = CheckpointLock(tmp_path / "run.ckpt")
    with held, pytest.raises(CheckpointLockedError, match="in use by another run"):
        run_pipeline(_config(events, tmp_path), sink_factory=sink)
    assert sink.kwargs == {} and sink.batches == []  # refused before connecting or reading


def test_the_lock_is_released_when_a_run_fails_so_the_next_run_starts(events: Path, tmp_path: Path) -> None:
    with pytest.raises(DeliveryError):
        run_pipeline(_config(events, tmp_path), sink_factory=FakeSink(ack_limit=1))
    with CheckpointLock(tmp_path / "run.ckpt") as lock:
        assert lock.held


def test_a_pipeline_without_a_checkpoint_takes_no_lock(events: Path, tmp_path: Path) -> None:
    config = build_pipeline(
        {
            "source": {"type": "parquet", "path": str(events)},
            "sink": {"stream": "http://127.0.0.1:1/bigdata/t"},
        }
    )
    run_pipeline(config, sink_factory=FakeSink())
    assert not list(tmp_path.rglob("*.lock"))


def _tamper(tmp_path: Path, **changes: Any) -> None:
    path = tmp_path / "run.ckpt"
    doc = json.loads(path.read_text())
    doc["source"] = {**doc["source"], **changes} if changes else {}
    path.write_text(json.dumps(doc))


def _stopped_run(events: Path, tmp_path: Path, batches: int = 5) -> None:
    """A run stopped after ``batches`` batches, leaving a mid-file checkpoint."""
    with pytest.raises(DeliveryError):
        run_pipeline(_config(events, tmp_path), sink_factory=FakeSink(ack_limit=batches))


def test_an_emptied_source_state_is_refused_not_a_silent_restart(events: Path, tmp_path: Path) -> None:
    _stopped_run(events, tmp_path)
    _tamper(tmp_path)
    sink = FakeSink()
    with pytest.raises(CheckpointError) as exc:
        run_pipeline(_config(events, tmp_path), sink_factory=sink)
    assert str(exc.value).startswith(f"checkpoint {tmp_path / 'run.ckpt'}: source.file: missing;")
    assert sink.batches == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"row_group": -5, "row_offset": -100},
            "source.row_group: expected greater than or equal to 0, got -5;",
        ),
        ({"row_offset": "250"}, 'source.row_offset: expected a valid integer, got "250"'),
        ({"rows": 1.5}, "source.rows: expected a valid integer, got 1.5"),
        ({"file": 7}, "source.file: expected a valid string, got 7"),
        ({"skip": True}, "source.skip: unknown key"),
        ({"row_group": 99, "row_offset": 0}, "source.row_group: 99 (offset 0) is past the end of"),
        ({"row_group": 0, "row_offset": 1_001}, "source.row_offset: 1001 is past the end of row group 0"),
    ],
)
def test_a_damaged_parquet_position_is_refused_naming_the_file_and_field(
    events: Path, tmp_path: Path, changes: dict[str, Any], problem: str
) -> None:
    _stopped_run(events, tmp_path)
    _tamper(tmp_path, **changes)
    with pytest.raises(CheckpointError) as exc:
        run_pipeline(_config(events, tmp_path), sink_factory=FakeSink())
    message = str(exc.value)
    assert message.startswith(f"checkpoint {tmp_path / 'run.ckpt'}: ")
    assert problem in message and "\n" not in message


def test_a_valid_hand_written_position_resumes_exactly_there(events: Path, tmp_path: Path) -> None:
    _stopped_run(events, tmp_path)
    first_file = sorted(str(p) for p in events.rglob("*.parquet"))[0]
    _tamper(tmp_path, file=first_file, file_index=0, row_group=2, row_offset=250, rows=2_250)
    sink = FakeSink()
    summary = run_pipeline(_config(events, tmp_path), sink_factory=sink)
    assert sink.seqs() == list(range(2_250, ROWS))
    assert summary.resumed_rows == 2_250
