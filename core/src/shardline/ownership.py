"""Which rows one of several writers owns, so that every key is written by exactly one of them.

A backfill spread over ``W`` writers (e.g. Dask workers) that must keep per-key order gives writer
``i`` the shards ``{s : s % W == i}`` of the stream's shard count *when the run started*. Every
writer reads the whole source in order and writes only the rows its shards own; the sink drops the
others (they are acknowledged with their batch: not written, not dead letters, counted in
``metrics.not_owned``). A key lives on one shard, so it is written by one writer, in source order.

Ownership is judged at the pinned ``shard_count`` for the whole run (and its resumes), while records
are still *placed* for the stream's current count: when the stream grows during a run, a key may
move to a new shard, but its owner does not change, so two writers never write one key.

Rows without a partition key (and explicit ShardIds beyond the pinned count) are owned by the
writer whose ``keyless`` is True (slot 0).
Strategies that place rows without looking at a key (``round-robin``) cannot be split this way:
:class:`ShardOwnership` refuses them (:class:`~shardline.ConfigError`) in :meth:`check_strategy`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shardline.errors import ConfigError


@dataclass(frozen=True)
class ShardOwnership:
    """The shards (of ``shard_count`` shards) whose rows a writer owns, and whether it owns keyless rows."""

    shard_count: int
    shards: frozenset[int]
    keyless: bool = False

    def __post_init__(self) -> None:
        if self.shard_count < 1:
            raise ConfigError(f"owned_shards: shard_count must be >= 1, got {self.shard_count}")
        outside = sorted(s for s in self.shards if not 0 <= s < self.shard_count)
        if outside:
            raise ConfigError(
                f"owned_shards: shards {outside} are outside 0..{self.shard_count - 1} "
                f"(the stream has {self.shard_count} shards)"
            )

    @classmethod
    def slot(cls, slot: int, slots: int, shard_count: int) -> ShardOwnership:
        """Writer ``slot`` of ``slots``: shards ``s % slots == slot``; slot 0 also owns keyless rows."""
        if not 0 <= slot < slots:
            raise ConfigError(f"owned_shards: slot {slot} is not in 0..{slots - 1}")
        return cls(shard_count, frozenset(range(slot, shard_count, slots)), keyless=slot == 0)

    @classmethod
    def of(cls, shards: Iterable[int], shard_count: int, *, keyless: bool = False) -> ShardOwnership:
        """Ownership of an explicit set of shards."""
        return cls(shard_count, frozenset(int(s) for s in shards), keyless)

    @staticmethod
    def check_strategy(name: str, looks_at_keys: bool) -> None:
        """Refuse a partitioner that places rows without a key: no writer could own them by shard."""
        if not looks_at_keys:
            raise ConfigError(
                f"partitioner {name!r} places rows without looking at a key, so rows cannot be split "
                "between writers by shard; use a key-based partitioner (hash, modulo, column, server) "
                'or split = "files"'
            )

    def keep(
        self, owner_shards: npt.NDArray[np.int64], keyless_rows: npt.NDArray[np.bool_] | None
    ) -> npt.NDArray[np.bool_]:
        """Per row: True when this writer owns it (``owner_shards`` placed at :attr:`shard_count`)."""
        table = np.zeros(self.shard_count + 1, np.bool_)
        table[list(self.shards)] = True
        table[self.shard_count] = self.keyless  # an explicit ShardId beyond the pinned count
        inside = (owner_shards >= 0) & (owner_shards < self.shard_count)
        keep: npt.NDArray[np.bool_] = table[np.where(inside, owner_shards, self.shard_count)]
        if keyless_rows is not None and keyless_rows.any():
            keep[keyless_rows] = self.keyless
        return keep
