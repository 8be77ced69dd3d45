"""The engine's queues: submitted batches, runs of their records, a shard's lane, a request.

A :class:`Lane` is one shard's ordering lane: a FIFO of :class:`Seg` (runs of one batch's records,
in write order), in at most one :class:`Request` at a time. Records are acknowledged per
:class:`Batch`, in submission order.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shardline.records import EncodedBatch
from shardline.throttle import ShardThrottle


@dataclass
class Batch:
    """One submitted batch: acked when ``remaining`` reaches 0 and every earlier batch was acked."""

    seq: int
    enc: EncodedBatch
    remaining: int
    nbytes: int
    records: int
    ack: Callable[[], None] | None


@dataclass(slots=True)
class Seg:
    """A run of records ``start:end`` of one batch, all of one shard, in write order."""

    batch: Batch
    start: int
    end: int
    attempt: int = 0
    first_failure: float | None = None
    last_error: str = ""


@dataclass
class Lane:
    """The ordering lane of one shard: its queue, whether it is in flight, and its throttle."""

    shard: int
    throttle: ShardThrottle
    queue: collections.deque[Seg] = field(default_factory=collections.deque)
    pending: int = 0
    busy: bool = False
    oldest: float = 0.0
    frozen: bool = False  # stopping: its records failed after the stop and are not retried
    scan_hint: int = 0  # records the last one-per-key scan found (0: it filled its request)


@dataclass
class Request:
    """One PutRecords request: pieces of lanes' queues, in body order (a lane's pieces adjacent)."""

    pieces: list[tuple[Lane, Seg]]
    count: int
    body_bytes: int

    def by_lane(self) -> Iterator[tuple[Lane, list[Seg]]]:
        """Each lane of the request with its pieces, in body order."""
        i = 0
        while i < len(self.pieces):
            lane = self.pieces[i][0]
            segs: list[Seg] = []
            while i < len(self.pieces) and self.pieces[i][0] is lane:
                segs.append(self.pieces[i][1])
                i += 1
            yield lane, segs


@dataclass(frozen=True)
class WholeFailure:
    """A request that failed as a whole with a retryable error: nothing of it is known written."""

    error: str
    throttled: bool


def runs(positions: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Sorted positions as runs of consecutive ones: ``[3, 4, 5, 9]`` -> ``[(3, 6), (9, 10)]``."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.concatenate(([0], breaks))].tolist()
    ends = (positions[np.append(breaks - 1, len(positions) - 1)] + 1).tolist()
    return list(zip(starts, ends, strict=True))


def part(seg: Seg, start: int, end: int) -> Seg:
    """Records ``start:end`` of ``seg``, with its retry state."""
    return Seg(seg.batch, start, end, seg.attempt, seg.first_failure, seg.last_error)
