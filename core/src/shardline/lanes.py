"""The engine's queues: submitted batches, segments of their records, a shard's lane, a request.

A :class:`Lane` is one shard's ordering lane: a FIFO of :class:`Seg` (records of one batch, in
write order), in at most one :class:`Request` at a time. Records are acknowledged per
:class:`Batch`, in submission order.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

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
    """Records ``rows`` of one batch (positions in its :class:`EncodedBatch`), all of one shard,
    with their retry state, in queue order (each key's records in write order; placement by
    generations puts a record of one key before an earlier record of another).

    Positions rather than a ``start:end`` run: one-record-per-key packing takes scattered records
    of a queue, and a run per taken record cost a Python object each (the sink's hot path).
    """

    batch: Batch
    rows: npt.NDArray[np.int64]
    attempt: int = 0
    first_failure: float | None = None
    last_error: str = ""
    # What is known of the keys (None: nothing): ``gens[0]`` leading records have distinct keys,
    # each its key's earliest in the segment; ``gens`` are the ends of the generations after them
    # (see EncodedBatch.shard_generations). ``closed``: every later record's key is among the
    # leading ones (False once some leading records were taken: their keys may come again later).
    gens: npt.NDArray[np.int64] | None = None
    closed: bool = True
    # True: ``rows`` are known to be ``r, r + 1, ...`` (a slice of the batch); None: not known yet.
    # Whoever assigns ``rows`` keeps it true only for a slice of a run, else resets it to None.
    run: bool | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def is_run(self) -> bool:
        """True when the rows are ``r, r + 1, ..., r + n - 1`` in that order (checked once: a
        numpy pass over ~500 rows per request piece cost ~0.1 us/record of the sink thread)."""
        if self.run is None:
            self.run = adjacent(self.rows)
        return self.run

    def data_bytes(self) -> int:
        """Bytes of Data of the records (before any encoding)."""
        return int(record_sizes(self.batch.enc.data_offsets, self.rows, self.is_run()).sum())

    def fragments(self) -> memoryview:
        """The records' wire fragments, joined in order (a slice of the batch's buffer when the
        records are adjacent, else gathered by Arrow's ``take``)."""
        enc = self.batch.enc
        rows = self.rows
        if self.is_run():
            return enc.fragments[enc.offsets[rows[0]] : enc.offsets[rows[-1] + 1]]
        taken = enc.fragment_array.take(pa.array(rows, pa.int64()))
        offs = np.frombuffer(taken.buffers()[1], np.int64, len(rows) + 1, taken.offset * 8)
        return memoryview(taken.buffers()[2])[offs[0] : offs[-1]]


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
    started: bool = False  # the engine's _send ran (a task cancelled before its first step never does)

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


def span(batch: Batch, start: int, end: int, gens: npt.NDArray[np.int64] | None = None) -> Seg:
    """Records ``start:end`` of ``batch``, never sent (``gens``: their generations' ends)."""
    return Seg(batch, np.arange(start, end, dtype=np.int64), gens=gens, run=True)


def part(seg: Seg, rows: npt.NDArray[np.int64], run: bool | None = None) -> Seg:
    """Records ``rows`` of ``seg``'s batch, with ``seg``'s retry state (``run``: see :attr:`Seg.run`)."""
    return Seg(seg.batch, rows, seg.attempt, seg.first_failure, seg.last_error, run=run)


def prefix(seg: Seg, k: int) -> Seg:
    """The first ``k`` records of ``seg`` as a part (a view); ``seg`` keeps the rest."""
    head = part(seg, seg.rows[:k], True if seg.run else None)
    seg.rows = seg.rows[k:]
    if not seg.run:
        seg.run = None
    return head


def adjacent(rows: npt.NDArray[np.int64]) -> bool:
    """True when ``rows`` are ``r, r + 1, ..., r + n - 1`` in that order (a slice of the batch)."""
    n = len(rows)
    if n == 0 or int(rows[-1]) - int(rows[0]) + 1 != n:
        return False
    return n <= 2 or bool((rows[1:] - rows[:-1] == 1).all())  # rows need not ascend (see Seg)


def record_sizes(
    offsets: npt.NDArray[np.int64], rows: npt.NDArray[np.int64], run: bool | None = None
) -> npt.NDArray[np.int64]:
    """The sizes of values ``rows`` of a binary buffer given by its ``offsets`` (a slice of
    ``offsets`` when the rows are adjacent; ``run``: whether they are, None to check)."""
    if run if run is not None else adjacent(rows):
        sizes: npt.NDArray[np.int64] = np.diff(offsets[int(rows[0]) : int(rows[-1]) + 2])
    else:
        sizes = offsets[rows + 1] - offsets[rows]
    return sizes
