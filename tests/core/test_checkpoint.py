"""The checkpoint store: atomic replacement, refusal of foreign or damaged states, the run lock."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import Field
from shardline.checkpoint import MAX_CHECKPOINT_BYTES, CheckpointLock, CheckpointLockedError, CheckpointStore
from shardline.errors import CheckpointError
from shardline.source import Source, SourceCheckpoint


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


# -- one run at a time: the lock beside the checkpoint --------------------------------------------


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    with CheckpointLock(tmp_path / "x.ckpt") as first:
        assert first.held and first.path == tmp_path / "x.ckpt.lock"
        with pytest.raises(CheckpointLockedError) as exc:
            CheckpointLock(tmp_path / "x.ckpt").acquire()
    message = str(exc.value)
    assert message.startswith(f"checkpoint {tmp_path / 'x.ckpt'} is in use by another run of this pipeline")
    assert f"pid {os.getpid()} on host {socket.gethostname()} since 20" in message
    assert "\n" not in message


def test_a_released_lock_can_be_taken_again_and_names_nobody(tmp_path: Path) -> None:
    lock = CheckpointLock(tmp_path / "x.ckpt")
    lock.acquire()
    lock.release()
    assert not lock.held
    assert (tmp_path / "x.ckpt.lock").read_text() == ""  # no stale holder left behind
    with CheckpointLock(tmp_path / "x.ckpt") as again:
        assert again.held


# -- checkpoint contents are checked against the source's model -----------------------------------


class _CursorCheckpoint(SourceCheckpoint):
    cursor: str = Field(min_length=1)
    pages: int = Field(ge=0)


class _CursorSource(Source):
    """A third-party source declaring its checkpoint model."""

    Checkpoint = _CursorCheckpoint

    def batches(self) -> Iterator[tuple[pa.RecordBatch, Any]]:
        yield from ()

    def ack(self, token: Any) -> None:
        pass

    def checkpoint(self) -> dict[str, Any]:
        return {"cursor": "c1", "pages": 0}


class _PickySource(_CursorSource):
    """A source with a check no model can express."""

    @classmethod
    def validate_checkpoint(cls, state: dict[str, Any]) -> dict[str, Any]:
        state = super().validate_checkpoint(state)
        if not state["cursor"].startswith("c"):
            raise ValueError(f"cursor {state['cursor']!r} is not one this API hands out")
        return state


def _store_with(tmp_path: Path, state: dict[str, Any]) -> CheckpointStore:
    store = CheckpointStore(tmp_path / "x.ckpt", "fp")
    store.save(state)
    return store


def test_a_state_the_sources_model_accepts_loads(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"cursor": "c9", "pages": 4})
    assert store.load(_CursorSource) == {"cursor": "c9", "pages": 4}


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({}, "source.cursor: missing; source.pages: missing"),
        ({"cursor": "c9", "pages": -1}, "source.pages: expected greater than or equal to 0, got -1"),
        ({"cursor": "c9", "pages": "4"}, 'source.pages: expected a valid integer, got "4"'),
        ({"cursor": "c9", "pages": 4, "extra": 1}, "source.extra: unknown key"),
    ],
)
def test_a_state_the_sources_model_refuses_is_one_line_naming_file_and_field(
    tmp_path: Path, state: dict[str, Any], problem: str
) -> None:
    store = _store_with(tmp_path, state)
    with pytest.raises(CheckpointError) as exc:
        store.load(_CursorSource)
    message = str(exc.value)
    assert message.startswith(f"checkpoint {store.path}: {problem}; it was edited or damaged")
    assert "delete it to start over" in message and "\n" not in message


def test_a_sources_own_check_is_reported_like_the_models(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"cursor": "x1", "pages": 4})
    with pytest.raises(CheckpointError, match=r"x\.ckpt: source: cursor 'x1' is not one this API hands out"):
        store.load(_PickySource)


def test_a_source_without_a_checkpoint_model_gets_the_state_as_saved(tmp_path: Path) -> None:
    class Unmodelled(_CursorSource):
        Checkpoint = None

    assert _store_with(tmp_path, {"anything": [1]}).load(Unmodelled) == {"anything": [1]}


def test_the_lock_is_one_per_file_whatever_name_reaches_it(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "x.ckpt").write_text("{}")
    (tmp_path / "other-name.ckpt").symlink_to(tmp_path / "real" / "x.ckpt")
    with CheckpointLock(tmp_path / "real" / "x.ckpt"):
        for name in (tmp_path / "alias" / "x.ckpt", tmp_path / "other-name.ckpt"):
            with pytest.raises(CheckpointLockedError):
                CheckpointLock(name).acquire()


def test_a_version_that_is_not_the_integer_1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_text('{"version": true, "fingerprint": "fp", "source": {}}')  # true == 1 in Python
    with pytest.raises(CheckpointError, match="format version True"):
        CheckpointStore(path, "fp").load()


def test_a_deeply_nested_or_huge_file_is_refused_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        CheckpointStore(path, "fp").load()
    with path.open("wb") as f:
        f.truncate(MAX_CHECKPOINT_BYTES + 1)
    with pytest.raises(CheckpointError, match="larger than 16 MiB"):
        CheckpointStore(path, "fp").load()


def test_a_long_bad_value_is_cut_in_the_message(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"cursor": "c1", "pages": "9" * 10_000})
    with pytest.raises(CheckpointError) as exc:
        store.load(_CursorSource)
    assert len(str(exc.value)) < 400 and "10,002 characters" in str(exc.value)


def test_a_lock_file_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (tmp_path / "x.ckpt.lock").symlink_to(victim)
    with pytest.raises(CheckpointError, match="symlink, which is never followed"):
        CheckpointLock(tmp_path / "x.ckpt").acquire()
    assert victim.read_text() == "keep me"


def test_a_forged_holder_in_the_lock_file_cannot_break_the_message_into_lines(tmp_path: Path) -> None:
    with CheckpointLock(tmp_path / "x.ckpt") as held:
        held.path.write_text(json.dumps({"pid": 1, "host": "evil\nerror: fake line" * 50, "since": "x"}))
        with pytest.raises(CheckpointLockedError) as exc:
            CheckpointLock(tmp_path / "x.ckpt").acquire()
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 400
