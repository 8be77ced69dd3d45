"""The checkpoint store: atomic replacement, and refusal of another pipeline's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardline.checkpoint import CheckpointStore
from shardline.errors import CheckpointError


def test_a_missing_checkpoint_loads_as_none(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "none.ckpt", "fp").load() is None


def test_save_then_load_round_trips_and_creates_the_directory(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "deep" / "dir" / "x.ckpt", "fp")
    store.save({"file": "a.parquet", "row_group": 3, "row_offset": 10}, stream="s")
    assert CheckpointStore(store.path, "fp").load() == {"file": "a.parquet", "row_group": 3, "row_offset": 10}
    assert json.loads(store.path.read_text())["stream"] == "s"
    assert store.writes == 1


def test_save_replaces_without_leaving_temporary_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "x.ckpt", "fp")
    for i in range(20):
        store.save({"n": i})
    assert store.load() == {"n": 19}
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]


def test_a_checkpoint_of_another_pipeline_is_refused(tmp_path: Path) -> None:
    CheckpointStore(tmp_path / "x.ckpt", "pipeline-a").save({"n": 1})
    with pytest.raises(CheckpointError, match="belongs to another pipeline"):
        CheckpointStore(tmp_path / "x.ckpt", "pipeline-b").load()


def test_a_torn_or_foreign_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_text('{"version": 1, "fingerpr')
    with pytest.raises(CheckpointError, match="not valid JSON; delete it"):
        CheckpointStore(path, "fp").load()
    path.write_text('["a list"]')
    with pytest.raises(CheckpointError, match="not a shardline checkpoint"):
        CheckpointStore(path, "fp").load()
    path.write_text('{"version": 99, "fingerprint": "fp", "source": {}}')
    with pytest.raises(CheckpointError, match="format version 99"):
        CheckpointStore(path, "fp").load()


def test_unserialisable_state_is_refused_and_the_old_checkpoint_kept(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "x.ckpt", "fp")
    store.save({"n": 1})
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        store.save({"n": object()})
    assert store.load() == {"n": 1}
