"""The layout of a Dask run: how many writers (slots), how the work is split, at which shard count.

The first run of a pipeline pins its layout next to the pipeline's checkpoint
(``<checkpoint>.dask/layout.ckpt``, written like any checkpoint: atomically, with the pipeline's
fingerprint); every resume reads it back and uses the same slots, split and shard count, whatever
the cluster looks like now. That is what makes per-slot checkpoints (``slot-003-of-004.ckpt``)
meaningful: slot ``i`` always owns the same keys (or the same files). Slots are Dask tasks, not
Dask workers: a retried task, or a task of a resumed run, finds its checkpoint by slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardline import CheckpointError, CheckpointStore

SPLITS = ("shards", "files")


@dataclass(frozen=True)
class Layout:
    """``split`` (``"shards"`` or ``"files"``), ``slots`` (writers) and the pinned ``shard_count``."""

    split: str
    slots: int
    shard_count: int

    def state(self) -> dict[str, Any]:
        """The layout as the JSON state of its checkpoint file."""
        return {"split": self.split, "slots": self.slots, "shard_count": self.shard_count}


def state_dir(checkpoint_path: str | Path) -> Path:
    """``<checkpoint>.dask``: where a Dask run keeps its layout and per-slot checkpoints."""
    path = Path(checkpoint_path)
    return path.with_name(path.name + ".dask")


def slot_checkpoint(checkpoint_path: str | Path, slot: int, slots: int) -> Path:
    """The checkpoint file of slot ``slot`` of ``slots``."""
    return state_dir(checkpoint_path) / f"slot-{slot:03d}-of-{slots:03d}.ckpt"


def pin_layout(checkpoint_path: str | Path, fingerprint: str, wanted: Layout) -> tuple[Layout, bool]:
    """The layout of this pipeline's run: the pinned one when there is one, else ``wanted`` (pinned now).

    Returns ``(layout, resumed)``. Raises :class:`~shardline.CheckpointError` when the pinned
    layout belongs to another pipeline or used another split (positions would not match).
    """
    store = CheckpointStore(state_dir(checkpoint_path) / "layout.ckpt", fingerprint)
    state = store.load()
    if state is None:
        store.save(wanted.state(), runner="dask")
        return wanted, False
    try:
        pinned = Layout(str(state["split"]), int(state["slots"]), int(state["shard_count"]))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"checkpoint {store.path} is not a Dask layout; delete it to start over"
        ) from None
    if pinned.split != wanted.split:
        raise CheckpointError(
            f"checkpoint {store.path}: this pipeline's run was started with split = {pinned.split!r}, "
            f"not {wanted.split!r}; resume it with the same split, or delete {state_dir(checkpoint_path)} "
            "to start over"
        )
    return pinned, True
