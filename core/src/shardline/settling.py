"""The settler: what becomes of a request's records once it is answered (or failed as a whole).

Like Flink's ``ResultHandler`` (``complete``, ``retryForEntries``, ``completeExceptionally``), one
verb per outcome of a request: :meth:`Settler.written` (every record stored), :meth:`Settler.answered`
(the stream refused some records: each is classified by the transport's wire into a named
:class:`~shardline.wire.Outcome`), :meth:`Settler.failed` (the request failed as a whole and
retryably: everything goes back) and :meth:`Settler.release` (the engine failed: nothing is
settled). Failed records go back to the *front* of their lane in write order (:meth:`requeue`),
records that can never be written are dead-lettered, and each lane's throttle hears how it went.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shardline.lanes import Lane, Request, Seg, WholeFailure, record_sizes
from shardline.metrics import SinkMetrics
from shardline.plugins import call_observers
from shardline.transport import PutFailure
from shardline.wire import Outcome, Wire

log = logging.getLogger("shardline.sink")

OUTAGE_LOG_EVERY_S = 10.0
"""At most one warning this often while requests fail as a whole."""

_WRITTEN, _THROTTLED, _REFRESH, _PERMANENT = (
    int(Outcome.WRITTEN),
    int(Outcome.THROTTLED),
    int(Outcome.REFRESH),
    int(Outcome.PERMANENT),
)  # plain ints for the settling loop (an enum attribute look-up per record shows in profiles)


@dataclass
class Settler:
    """Settles requests for one engine (see the module docstring).

    ``dead_letter(record, error, reason)`` writes a dead letter; ``refresh_soon()`` asks for a
    shard-map refresh now; ``stopping()`` is True once the engine stops retrying (failed records
    then freeze in their lane); ``undelivered()`` counts records not yet settled (for warnings).
    """

    metrics: SinkMetrics
    stream: str
    wire: Wire
    ordering: str
    retry_deadline_s: float | None
    dead_letter: Callable[[dict[str, Any], str, str], None]
    refresh_soon: Callable[[], None]
    stopping: Callable[[], bool]
    undelivered: Callable[[], int]
    _outage_logged: float = -OUTAGE_LOG_EVERY_S
    _warned_violation: bool = False

    def release(self, request: Request) -> None:
        """Fatal: the engine failed; free the lanes, leave the records unacknowledged."""
        for lane, segs in request.by_lane():
            lane.busy = False
            self._in_flight_done(lane, sum(len(s) for s in segs))

    def written(self, request: Request) -> None:
        """Every record of the request was written."""
        metrics = self.metrics
        metrics.records += request.count
        for lane, segs in request.by_lane():
            n = 0
            for seg in segs:
                k = len(seg)
                seg.batch.remaining -= k
                metrics.bytes += seg.data_bytes()
                n += k
            lane.busy = False
            self._in_flight_done(lane, n)
            metrics.shard_records[lane.shard] = metrics.shard_records.get(lane.shard, 0) + n
            lane.throttle.written()
            metrics.shard_allowance[lane.shard] = lane.throttle.allowance

    def failed(self, request: Request, whole: WholeFailure) -> None:
        """The request failed as a whole (retryable): every record goes back, the lanes back off."""
        now = time.monotonic()
        self.metrics.failed_requests += 1
        self.metrics.throttled_requests += whole.throttled
        if now - self._outage_logged >= OUTAGE_LOG_EVERY_S:
            self._outage_logged = now
            log.warning(
                "a request to %s failed (%s); %s records wait and are retried with backoff",
                self.stream,
                whole.error,
                f"{self.undelivered():,}",
            )
        for lane, segs in request.by_lane():
            lane.busy = False
            n = sum(len(s) for s in segs)
            self._in_flight_done(lane, n)
            retried = [retried_part(s, s.rows, now, whole.error) for s in segs]
            self.requeue(lane, retried, now)
            if whole.throttled:
                lane.throttle.throttled(now)
            else:
                lane.throttle.unreachable(now)
            self.metrics.shard_allowance[lane.shard] = lane.throttle.allowance
            self._note_retry(lane, n, whole.error, retried)

    def answered(self, request: Request, failures: list[PutFailure]) -> None:
        """The stream answered and refused some records: classify each, settle lane by lane."""
        now = time.monotonic()
        status = np.zeros(request.count, np.int8)  # Outcome per record of the request
        messages: dict[int, str] = {}
        for f in failures:
            status[f.index] = self.wire.classify(f)
            messages[f.index] = f.describe()  # with the server's detail, for dead letters and errors
        self.metrics.throttled_requests += bool((status == int(Outcome.THROTTLED)).any())
        pos = 0
        for lane, segs in request.by_lane():
            n = sum(len(s) for s in segs)
            self._settle_lane(lane, segs, status[pos : pos + n], messages, pos, now)
            pos += n

    def _settle_lane(
        self,
        lane: Lane,
        segs: list[Seg],
        status: npt.NDArray[np.int8],
        messages: dict[int, str],
        offset: int,
        now: float,
    ) -> None:
        """Settle one lane's part of an answered request (``status``: an Outcome per record)."""
        lane.busy = False
        self._in_flight_done(lane, len(status))
        retry: list[Seg] = []
        written = 0
        error = ""
        pos = 0
        for seg in segs:
            k = len(seg)
            ok, error = self._settle_segment(
                seg, status[pos : pos + k], messages, offset + pos, now, retry, error
            )
            written += ok
            pos += k
        metrics = self.metrics
        if written:
            metrics.records += written
            metrics.shard_records[lane.shard] = metrics.shard_records.get(lane.shard, 0) + written
        if (status == _THROTTLED).any():
            lane.throttle.throttled(now, progressed=written > 0)
        elif written:
            lane.throttle.written()
        elif retry:
            lane.throttle.refused(now)
        metrics.shard_allowance[lane.shard] = lane.throttle.allowance
        if (status == _REFRESH).any():
            self.refresh_soon()
        if retry:
            self.requeue(lane, retry, now)
            self._note_retry(lane, sum(len(s) for s in retry), error, retry)
            if written and self.ordering == "none":
                self._count_order_breaks(lane, segs, status)

    def _settle_segment(
        self,
        seg: Seg,
        codes: npt.NDArray[np.int8],
        messages: dict[int, str],
        offset: int,
        now: float,
        retry: list[Seg],
        error: str,
    ) -> tuple[int, str]:
        """Settle one segment (``codes``: its records' outcomes; ``messages`` from request index
        ``offset``): the retried records go to ``retry`` (one segment), permanent ones (or ones past
        the retry deadline) to the dead letters. Returns (records written, the last retryable error)."""
        k = len(seg)
        batch = seg.batch
        if not codes.any():  # all written
            batch.remaining -= k
            self.metrics.bytes += seg.data_bytes()
            return k, error
        deadline = self.retry_deadline_s
        first = seg.first_failure
        expired = deadline is not None and first is not None and now - first > deadline
        ok = codes == _WRITTEN
        dead = ~ok if expired else codes == _PERMANENT
        for j in np.flatnonzero(dead).tolist():
            reason = (
                "rejected by the stream"
                if codes[j] == _PERMANENT
                else f"retry deadline of {deadline:g} s exceeded after {seg.attempt + 1} attempts"
            )
            self.dead_letter(batch.enc.record(int(seg.rows[j])), messages[offset + j], reason)
        batch.remaining -= int(dead.sum())
        again = np.flatnonzero(~ok & ~dead)
        if len(again):
            error = messages[offset + int(again[-1])]
            retry.append(retried_part(seg, seg.rows[again], now, error))
        n_ok = int(ok.sum())
        if n_ok:
            batch.remaining -= n_ok
            self.metrics.bytes += int(record_sizes(batch.enc.data_offsets, seg.rows[ok]).sum())
        return n_ok, error

    def requeue(self, lane: Lane, retry: list[Seg], now: float) -> None:
        """Put failed records back at the front of their lane, in write order (or freeze it: stopping)."""
        if not retry:
            return
        lane.queue.extendleft(reversed(retry))
        lane.oldest = min(lane.oldest, now) if lane.pending else now
        lane.pending += sum(len(s) for s in retry)
        if self.stopping():
            lane.frozen = True

    def _note_retry(self, lane: Lane, n: int, error: str, segs: list[Seg]) -> None:
        self.metrics.retries += n
        call_observers(
            "shardline_on_retry",
            stream=self.stream,
            shard_id=lane.shard,
            records=n,
            error=error,
            attempt=max(s.attempt for s in segs),
        )

    def _count_order_breaks(self, lane: Lane, segs: list[Seg], status: npt.NDArray[np.int8]) -> None:
        """``ordering="none"``: count keys of which a record failed and a later one was written."""
        keys = np.concatenate([s.batch.enc.key_hashes[s.rows] for s in segs])
        again = np.flatnonzero((status != Outcome.WRITTEN) & (status != Outcome.PERMANENT))
        failed_keys, first = np.unique(keys[again], return_index=True)
        first_fail = again[first]
        ok = np.flatnonzero(status == Outcome.WRITTEN)
        at = np.minimum(np.searchsorted(failed_keys, keys[ok]), len(failed_keys) - 1)
        broken = (failed_keys[at] == keys[ok]) & (ok > first_fail[at])
        violations = len(np.unique(keys[ok][broken]))
        if not violations:
            return
        self.metrics.order_violations += violations
        if not self._warned_violation:
            self._warned_violation = True
            log.warning(
                "ordering='none': the stream failed a record of shard %d and accepted a later record of the "
                "same key; that key's order is broken (counted in metrics.order_violations; the default "
                "ordering='strict' rules this out)",
                lane.shard,
            )

    def _in_flight_done(self, lane: Lane, n: int) -> None:
        left = self.metrics.shard_in_flight.get(lane.shard, 0) - n
        self.metrics.shard_in_flight[lane.shard] = max(left, 0)


def retried_part(seg: Seg, rows: npt.NDArray[np.int64], now: float, error: str) -> Seg:
    """Records ``rows`` of ``seg``'s batch after a failed attempt (records of one request: one per
    key, each its key's earliest queued one)."""
    return Seg(seg.batch, rows, seg.attempt + 1, seg.first_failure or now, error, gens=np.array([len(rows)]))
