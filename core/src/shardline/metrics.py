"""Counters of a sink, readable at any time (``sink.metrics``) and as a dict (``snapshot()``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SinkMetrics:
    """What a sink has done so far. Updated by the sink's event loop; read from any thread.

    ``records``/``bytes`` count records written (Data bytes, before base64); ``requests`` PutRecords
    requests sent; ``retries`` records sent again after a failure; ``dead_letters`` records given
    up; ``order_violations`` keys whose order the stream broke in ``ordering="none"`` (never in the
    default ``"strict"``, which rules it out);
    ``buffered_bytes`` encoded records not yet acknowledged and ``request_bytes`` the bodies of the
    requests in flight (together under ``max_in_flight_bytes``); ``nonfinite_floats`` NaN/inf
    values the codec wrote as ``null`` (JSON has no form for them); ``not_owned`` rows left to
    another writer (``owned_shards``, see :mod:`shardline.ownership`).
    """

    records_in: int = 0
    records: int = 0
    bytes: int = 0
    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    dead_letters: int = 0
    order_violations: int = 0
    shard_growths: int = 0
    shard_count: int = 0
    batches_acked: int = 0
    in_flight_requests: int = 0
    buffered_bytes: int = 0
    request_bytes: int = 0
    nonfinite_floats: int = 0
    not_owned: int = 0
    shard_in_flight: dict[int, int] = field(default_factory=dict)
    shard_records: dict[int, int] = field(default_factory=dict)
    shard_allowance: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of every counter, plus ``elapsed_s``, ``rate`` (records/s) and ``shard_rate``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "records_in": self.records_in,
            "records": self.records,
            "bytes": self.bytes,
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "order_violations": self.order_violations,
            "shard_growths": self.shard_growths,
            "shard_count": self.shard_count,
            "batches_acked": self.batches_acked,
            "in_flight_requests": self.in_flight_requests,
            "buffered_bytes": self.buffered_bytes,
            "request_bytes": self.request_bytes,
            "nonfinite_floats": self.nonfinite_floats,
            "not_owned": self.not_owned,
            "shard_in_flight": dict(self.shard_in_flight),
            "shard_records": dict(self.shard_records),
            "shard_allowance": dict(self.shard_allowance),
            "elapsed_s": elapsed,
            "rate": self.records / elapsed,
            "shard_rate": {s: n / elapsed for s, n in self.shard_records.items()},
        }
