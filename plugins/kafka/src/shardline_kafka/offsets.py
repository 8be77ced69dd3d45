"""Which offsets may be committed: per partition, the end of the acknowledged prefix.

Every yielded batch registers, per partition it holds, the range of offsets it covers. An ack marks
those ranges; per partition the tracker then advances over the acknowledged ranges at the front of
the queue, in yield order, so the committable offset is always one past a record below which
*every* record was acknowledged — even if acks came out of order. Thread-safe: the sink may ack
from its own thread while the consumer thread yields and commits.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field

from kafka import TopicPartition


@dataclass(eq=False)
class _Range:
    tp: TopicPartition
    epoch: int
    end: int  # one past the last offset of the batch in this partition
    acked: bool = False


@dataclass(frozen=True)
class KafkaAckToken:
    """The ack token of one yielded batch: its sequence number and per-partition ranges."""

    seq: int
    ranges: tuple[_Range, ...] = field(repr=False)

    def __repr__(self) -> str:
        parts = ", ".join(f"{r.tp.topic}[{r.tp.partition}]<{r.end}" for r in self.ranges)
        return f"KafkaAckToken({self.seq}: {parts})"


class OffsetTracker:
    """Acknowledged-prefix bookkeeping for the partitions this consumer owns."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._seq = itertools.count()
        self._epoch: dict[TopicPartition, int] = {}
        self._pending: dict[TopicPartition, deque[_Range]] = {}
        self._acked: dict[TopicPartition, int] = {}  # next offset after the acknowledged prefix
        self._committed: dict[TopicPartition, int] = {}  # last offset sent in a commit
        self._news = False  # acknowledged offsets advanced since the last wait_news()

    def assign(self, partitions: set[TopicPartition]) -> None:
        """Start tracking ``partitions`` afresh (a new assignment epoch)."""
        with self._lock:
            for tp in partitions:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1
                self._pending[tp] = deque()
                self._acked.pop(tp, None)
                self._committed.pop(tp, None)

    def revoke(self, partitions: set[TopicPartition]) -> None:
        """Forget ``partitions``: later acks of their batches are ignored."""
        with self._lock:
            for tp in partitions:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1
                self._pending.pop(tp, None)
                self._acked.pop(tp, None)
                self._committed.pop(tp, None)
            self._lock.notify_all()

    def register(self, ends: dict[TopicPartition, int]) -> KafkaAckToken:
        """Record a batch about to be yielded (``ends``: one past its last offset per partition)."""
        with self._lock:
            ranges = []
            for tp, end in ends.items():
                rng = _Range(tp, self._epoch.get(tp, 0), end)
                self._pending.setdefault(tp, deque()).append(rng)
                ranges.append(rng)
            return KafkaAckToken(next(self._seq), tuple(ranges))

    def ack(self, token: KafkaAckToken) -> None:
        """Mark a batch acknowledged and advance each partition over its acknowledged front."""
        with self._lock:
            for rng in token.ranges:
                if self._epoch.get(rng.tp) != rng.epoch:
                    continue  # the partition was revoked since: its new owner re-reads it
                rng.acked = True
                queue = self._pending.get(rng.tp)
                while queue and queue[0].acked:
                    self._acked[rng.tp] = queue.popleft().end
                    self._news = True
            self._lock.notify_all()

    def to_commit(self, partitions: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets acknowledged but not yet committed (optionally only of ``partitions``)."""
        with self._lock:
            return {
                tp: off
                for tp, off in self._acked.items()
                if (partitions is None or tp in partitions) and self._committed.get(tp, -1) < off
            }

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Note that ``offsets`` were sent in a commit."""
        with self._lock:
            for tp, off in offsets.items():
                if tp in self._pending and self._committed.get(tp, -1) < off:
                    self._committed[tp] = off

    def unacked(self, partitions: set[TopicPartition] | None = None) -> int:
        """How many yielded batch ranges (of ``partitions``) still wait for their ack."""
        with self._lock:
            return sum(len(q) for tp, q in self._pending.items() if partitions is None or tp in partitions)

    def wait_acked(self, partitions: set[TopicPartition] | None, timeout: float) -> bool:
        """Block until nothing of ``partitions`` waits for an ack; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self.unacked(partitions) == 0, timeout)

    def wait_news(self, timeout: float) -> bool:
        """Block until acknowledged offsets advanced (or ``timeout``); consume the news."""
        with self._lock:
            self._lock.wait_for(lambda: self._news, timeout)
            news, self._news = self._news, False
            return news

    def wake(self) -> None:
        """Wake a :meth:`wait_news` waiter (at close)."""
        with self._lock:
            self._news = True
            self._lock.notify_all()

    def committed_offsets(self) -> dict[TopicPartition, int]:
        """The last offset sent in a commit, per owned partition (none yet: absent)."""
        with self._lock:
            return dict(self._committed)

    def acked_offsets(self) -> dict[TopicPartition, int]:
        """Next offset after the acknowledged prefix, per owned partition."""
        with self._lock:
            return dict(self._acked)
