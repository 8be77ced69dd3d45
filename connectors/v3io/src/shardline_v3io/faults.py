"""Fault injection for users' tests: fail some records of each PutRecords, or whole requests.

``rate`` is the fraction of records to fail with a retryable per-record error
(:data:`shardline_v3io.errors.RESOURCE_BUSY`). Two shapes:

``random``
    every record fails independently with probability ``rate``.
``tail``
    how an append log stops: for each shard that has records in the request, with probability
    ``min(1, 2 * rate)`` a cut point is drawn uniformly among that shard's records and every record
    of the shard from the cut point to the end of the request fails (so about ``rate`` of the
    records fail for rates up to 0.5). Records before the cut, and all records of other shards,
    succeed.

``status`` / ``status_rate``: that fraction of whole requests is answered with HTTP ``status``
(e.g. 503) and a v3io error body, before anything is written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SHAPES = ("random", "tail")


@dataclass
class FaultConfig:
    """What to inject; all off by default."""

    rate: float = 0.0
    shape: str = "random"
    status: int = 503
    status_rate: float = 0.0
    seed: int | None = None
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate}")
        if not 0.0 <= self.status_rate <= 1.0:
            raise ValueError(f"fault status rate must be within [0, 1], got {self.status_rate}")
        if self.shape not in SHAPES:
            raise ValueError(f"fault shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"fault status must be an HTTP status, got {self.status}")
        self.rng = random.Random(self.seed)

    @property
    def enabled(self) -> bool:
        """True when per-record faults are on."""
        return self.rate > 0.0

    def fail_request(self) -> bool:
        """Draw whether this whole request is answered with ``status``."""
        return self.status_rate > 0.0 and self.rng.random() < self.status_rate

    def failing(self, shard_of: list[int], candidates: list[int]) -> set[int]:
        """Indexes (into the request) of the records to fail, among ``candidates`` (request order).

        ``shard_of[i]`` is the shard of record ``i``.
        """
        if not self.enabled or not candidates:
            return set()
        rng = self.rng
        if self.shape == "random":
            return {i for i in candidates if rng.random() < self.rate}
        per_shard: dict[int, list[int]] = {}
        for i in candidates:
            per_shard.setdefault(shard_of[i], []).append(i)
        out: set[int] = set()
        p = min(1.0, 2.0 * self.rate)
        for idxs in per_shard.values():
            if rng.random() < p:
                cut = rng.randrange(len(idxs))
                out.update(idxs[cut:])
        return out
