"""Counters of a sink, readable at any time (``sink.metrics``) and as a dict (``snapshot()``)."""

from __future__ import annotations

import re
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
    values the codec wrote as ``null`` (JSON has no form for them); ``throttled_requests`` requests
    the stream throttled (as a whole or some of their records); ``stream`` the (redacted) stream URL
    observer hooks name; ``last_contact`` the ``time.monotonic()`` at which the stream last answered
    (a put or a describe; None before it ever did); ``not_owned`` rows left to another writer
    (``owned_shards``, see :mod:`shardline.ownership`).
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
    throttled_requests: int = 0
    stream: str = ""
    last_contact: float | None = None
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
            "throttled_requests": self.throttled_requests,
            "not_owned": self.not_owned,
            "shard_in_flight": dict(self.shard_in_flight),
            "shard_records": dict(self.shard_records),
            "shard_allowance": dict(self.shard_allowance),
            "elapsed_s": elapsed,
            "rate": self.records / elapsed,
            "shard_rate": {s: n / elapsed for s, n in self.shard_records.items()},
        }


_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def error_name(error: str) -> str:
    """The name of an error as observer hooks report it, for a metric label or a summary.

    ``"ProvisionedThroughputExceededException: Rate exceeded for shard 3"`` ->
    ``"ProvisionedThroughputExceededException"``; ``"TransportError: HTTP 503"`` -> ``"TransportError"``;
    ``"error -5"`` -> ``"error"``. Bounded: the detail (keys, numbers, shard ids) is dropped.
    """
    match = _NAME.match(error.strip())
    return match.group(0)[:80] if match else "unknown"


def reason_label(reason: str) -> str:
    """A dead-letter reason without its numbers and detail, for a metric label.

    ``"retry deadline of 30 s exceeded after 5 attempts"`` -> ``"retry deadline of N s exceeded
    after N attempts"``; ``"Data is 2000000 bytes; the limit is 1048576 bytes"`` -> ``"Data is N bytes"``.
    """
    head = re.split(r"[;:(]", reason, maxsplit=1)[0].strip()
    return _DIGITS.sub("N", head)[:80] or "unknown"
