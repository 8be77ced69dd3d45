"""Request latency and retries by error for a run's summary, gathered from the observer hooks.

The runner registers one :class:`RequestStats` per run (as a plugin, for the length of the run),
so the summary's p50/p99 and retries-by-error come from the same ``shardline_on_request`` and
``shardline_on_retry`` calls a third-party exporter sees.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from shardline.hookspecs import hookimpl
from shardline.metrics import error_name

RESERVOIR = 4096
"""Latency samples kept (reservoir sampling, Vitter's algorithm R): bounded memory, unbiased quantiles."""


class RequestStats:
    """Latency quantiles (seconds) and retried records by error name, for requests to one stream."""

    def __init__(self, stream: Callable[[], str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._samples: list[float] = []
        self._seen = 0
        self._random = random.Random(0)
        self.retries_by_error: dict[str, int] = {}

    @hookimpl
    def shardline_on_request(self, stream: str, seconds: float) -> None:
        """Keep a sample of the request's latency."""
        if stream != self._stream():
            return
        with self._lock:
            self._seen += 1
            if len(self._samples) < RESERVOIR:
                self._samples.append(seconds)
            else:
                slot = self._random.randrange(self._seen)
                if slot < RESERVOIR:
                    self._samples[slot] = seconds

    @hookimpl
    def shardline_on_retry(self, stream: str, records: int, error: str) -> None:
        """Count retried records by the error's name."""
        if stream != self._stream():
            return
        name = error_name(error)
        with self._lock:
            self.retries_by_error[name] = self.retries_by_error.get(name, 0) + records

    def quantiles(self) -> dict[str, float]:
        """``{"p50": s, "p99": s}`` of the requests seen (empty when none was sent)."""
        with self._lock:
            ordered = sorted(self._samples)
        if not ordered:
            return {}
        return {f"p{q}": ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] for q in (50, 99)}
