"""Fault injection for users' tests (``shardline serve --fault-*``); all off by default.

Per-record faults: ``rate`` (``--fault-rate F``) is the expected fraction of a PutRecords'
records that fail with the retryable per-record error :data:`shardline_v3io.errors.RESOURCE_BUSY`
(``ResourceBusyException``), whatever the request holds. Only records that would otherwise be
written are candidates; records failed for their own reasons (too large, bad ShardId) stay so.
Two shapes:

``random``
    every record fails independently with probability ``rate``.
``tail``
    how an append log stops: for each shard with ``n`` candidate records in the request, the
    number that fail is drawn as ``m ~ Binomial(n, rate)`` and the LAST ``m`` of that shard's
    records (in request order) fail; the shard's earlier records succeed. So ``E[m] = rate * n``
    for every ``n``, including one record per shard, and once a record of a shard fails every later
    record of that shard in the request fails too.

Whole-request faults, each drawn once per request:

``status`` / ``status_rate`` (``--fault-status``, ``--fault-status-rate``)
    that fraction of PutRecords / GetRecords / Seek / DescribeStream requests is answered with HTTP
    ``status`` (400..599, e.g. 503) and a v3io error body, before anything is written.
``reset_rate`` (``--fault-reset-rate``)
    that fraction of PutRecords requests answered 200 is written as usual (durably, exactly as the
    answer would say, per-record faults included) and then the TCP connection is reset with no
    HTTP answer: the client sees a connection reset / server disconnect, an outcome it cannot know
    (retrying it makes duplicates).
``latency_ms`` / ``latency_rate`` (``--fault-latency MS``, ``--fault-latency-rate F``)
    that fraction of PutRecords requests answered 200 (and not reset) is answered after a delay
    drawn uniformly in ``[0, latency_ms]`` milliseconds. The records are written before the delay;
    only the answer waits, and other requests are served meanwhile. ``latency_rate`` defaults to
    1.0 when ``latency_ms > 0`` (every PutRecords is delayed).

``seed`` makes the draws reproducible (one numpy generator per server, drawn in request order).
Invalid values raise :class:`shardline.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from shardline import ConfigError

SHAPES = ("random", "tail")


def _check_fraction(flag: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{flag} must be a fraction within [0, 1] (0.3 = 30%), got {value}")


@dataclass
class FaultConfig:
    """What to inject; all off by default (see the module docstring for each fault).

    ``rate``, ``status_rate``, ``reset_rate`` and ``latency_rate`` are fractions in [0, 1];
    ``latency_ms`` is a finite number of milliseconds >= 0; ``status`` an HTTP status in 400..599.
    Raise :class:`~shardline.errors.ConfigError` on any other value.
    """

    rate: float = 0.0
    shape: str = "random"
    status: int = 503
    status_rate: float = 0.0
    reset_rate: float = 0.0
    latency_ms: float = 0.0
    latency_rate: float | None = None
    seed: int | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_fraction("--fault-rate", self.rate)
        _check_fraction("--fault-status-rate", self.status_rate)
        _check_fraction("--fault-reset-rate", self.reset_rate)
        if self.shape not in SHAPES:
            raise ConfigError(f"--fault-shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if type(self.status) is not int or not 400 <= self.status <= 599:
            raise ConfigError(f"--fault-status must be an HTTP error status in 400..599, got {self.status}")
        if not (isinstance(self.latency_ms, (int, float)) and math.isfinite(self.latency_ms)) or (
            self.latency_ms < 0
        ):
            raise ConfigError(
                f"--fault-latency must be a number of milliseconds >= 0 (200 = up to 0.2 s), "
                f"got {self.latency_ms}"
            )
        if self.latency_rate is None:
            self.latency_rate = 1.0 if self.latency_ms > 0 else 0.0
        _check_fraction("--fault-latency-rate", self.latency_rate)
        if self.latency_rate > 0 and self.latency_ms == 0:
            raise ConfigError(
                "--fault-latency-rate needs --fault-latency MS > 0 (the longest delay to inject)"
            )
        self.rng = np.random.default_rng(self.seed)

    @property
    def enabled(self) -> bool:
        """True when per-record faults are on."""
        return self.rate > 0.0

    def fail_request(self) -> bool:
        """Draw whether this whole request is answered with ``status``."""
        return self.status_rate > 0.0 and bool(self.rng.random() < self.status_rate)

    def reset_request(self) -> bool:
        """Draw whether this (written) PutRecords is answered by a connection reset."""
        return self.reset_rate > 0.0 and bool(self.rng.random() < self.reset_rate)

    def answer_delay_s(self) -> float:
        """Draw the delay of this PutRecords answer in seconds (0.0: answer at once)."""
        rate = self.latency_rate or 0.0
        if rate <= 0.0 or self.rng.random() >= rate:
            return 0.0
        return float(self.rng.uniform(0.0, self.latency_ms)) / 1000.0

    def failing(
        self, shard: npt.NDArray[np.int64], candidate: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.int64]:
        """Indexes (into the request, ascending) of the records to fail with a per-record fault.

        ``shard`` (shape ``(n,)``) is each record's shard; ``candidate`` (``(n,)`` bool) marks the
        records that may fail (those that would be written). One numpy pass, no Python step per
        record.
        """
        cand = np.flatnonzero(candidate)
        if not self.enabled or not len(cand):
            return np.empty(0, dtype=np.int64)
        if self.shape == "random":
            return cand[self.rng.random(len(cand)) < self.rate]
        # tail: group the candidates by shard (stable: request order within a shard)
        order = np.argsort(shard[cand], kind="stable")
        grouped = cand[order]
        shards = shard[grouped]
        starts = np.flatnonzero(np.concatenate(([True], shards[1:] != shards[:-1])))
        counts = np.diff(np.append(starts, len(grouped)))
        failed = self.rng.binomial(counts, self.rate)
        position = np.arange(len(grouped)) - np.repeat(starts, counts)
        fails = position >= np.repeat(counts - failed, counts)
        return np.sort(grouped[fails])
