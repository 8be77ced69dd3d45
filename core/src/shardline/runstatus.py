"""A live, read-only view of one pipeline run, for observers: metrics exporters and health checks.

The runner hands a :class:`RunStatus` to ``shardline_on_run_started`` and
``shardline_on_run_finished``. Everything on it is read when asked (at scrape time), from any
thread; nothing polls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from shardline.redact import redact_url

if TYPE_CHECKING:
    from shardline.config import PipelineConfig
    from shardline.metrics import SinkMetrics
    from shardline.source import Source, SourceGauge


class RunStatus:
    """One run as observers see it.

    ``config`` is the run's :class:`~shardline.PipelineConfig`; ``started`` its
    ``time.monotonic()`` start; ``finished`` True once it ended; ``endpoints`` the addresses
    observers announced (``{"metrics": "http://127.0.0.1:9464/metrics"}``).
    """

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self.config: PipelineConfig = runner.config
        self.started = time.monotonic()
        self.finished = False
        self.endpoints: dict[str, str] = {}

    # -- what observers read ---------------------------------------------------------------------

    @property
    def source(self) -> Source | None:
        """The run's source (None before it is made)."""
        source: Source | None = self._runner._source
        return source

    @property
    def sink_metrics(self) -> SinkMetrics | None:
        """The sink's counters (None until the sink connected)."""
        sink = self._runner._sink
        return sink.metrics if sink is not None else None

    @property
    def stream(self) -> str:
        """The stream URL, redacted, as observer hooks name it (``stream=`` arguments)."""
        metrics = self.sink_metrics
        if metrics is not None and metrics.stream:
            return metrics.stream
        return redact_url(self.config.sink.stream)

    @property
    def rows_read(self) -> int:
        """Rows the source yielded so far in this run."""
        return int(self._runner._read_rows)

    @property
    def batches_read(self) -> int:
        """Batches the source yielded so far in this run."""
        return int(self._runner._read_batches)

    @property
    def rows_acked(self) -> int:
        """Rows of this run written (or dead-lettered) and acknowledged to the source."""
        return int(self._runner._acked_rows)

    @property
    def batches_acked(self) -> int:
        """Batches of this run acknowledged to the source."""
        return int(self._runner._acked_batches)

    @property
    def checkpoint_saved_at(self) -> float | None:
        """``time.monotonic()`` of the last time the checkpoint was brought up to date (None: not yet,
        or the pipeline has no ``[checkpoint]``)."""
        saved: float | None = self._runner._checkpoint_saved_at
        return saved

    def source_gauges(self) -> list[SourceGauge]:
        """The source's :meth:`~shardline.Source.gauges` (empty when it has none or they fail)."""
        source = self.source
        if source is None:
            return []
        try:
            return list(source.gauges())
        except Exception:  # gauges are a nicety: a scrape never fails for them
            return []

    def not_ready(self, within_s: float) -> str | None:
        """Why the run is not ready, in one line, or None when it is (``/readyz``).

        Ready: the run is going, the source says it is connected, and the stream answered within
        the last ``within_s`` seconds.
        """
        if self.finished:
            return "the run has ended"
        source = self.source
        if source is None:
            return "the source is not open yet"
        try:
            reason = source.not_ready()
        except Exception as exc:
            reason = f"the source cannot say whether it is ready: {type(exc).__name__}: {exc}"
        if reason:
            return reason
        metrics = self.sink_metrics
        if metrics is None:
            return f"not connected to the stream {self.stream} yet"
        if metrics.last_contact is None:
            return f"the stream {self.stream} has not answered yet"
        age = time.monotonic() - metrics.last_contact
        if age > within_s:
            return f"the stream {self.stream} has not answered for {age:.0f} s (limit {within_s:g} s)"
        return None

    # -- what observers tell ---------------------------------------------------------------------

    def announce(self, name: str, url: str) -> None:
        """Tell the run where an observer serves something (``"metrics"``, ``"http://HOST:PORT/metrics"``)."""
        self.endpoints[name] = url
