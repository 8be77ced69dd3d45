"""The driver of a Dask run: plan once, pin the layout, run one task per slot, show the cluster's progress.

``[engine] type = "dask"`` (or ``shardline run --dask ADDRESS``) ends up in :func:`run_on_dask`:

1. The source's plan is computed once, here (for Parquet: every footer, the unified schema, the
   row groups and total rows: ``ParquetSource.make_plan``), and shipped to the workers, which do
   not list or open a footer again.
2. The stream is reached (and created when ``[sink] create`` asks) to learn its shard count, and
   the layout (split, slots, shard count) is pinned next to the checkpoint, or read back on a
   resume (:mod:`shardline_dask.layout`).
3. One Dask task per slot runs :func:`shardline_dask.slot.run_slot`. ``split = "shards"``: slot
   ``i`` of ``W`` owns shards ``s % W == i`` at the pinned count, reads the whole plan in order
   and writes only its keys (per-key order as in one process; read amplification ``W``).
   ``split = "files"``: the files are spread over the slots (balanced by rows); each file is read
   once, in order, but there is no order across files.
4. The driver shows the cluster's rows/s and ETA from the slots' reports, forwards a stop
   (SIGINT/SIGTERM, or a failed slot) to every slot, and sums their summaries.

A task whose worker dies (kill -9) is run again by Dask on another worker and resumes from its
slot's checkpoint; a killed driver's slots stop within ``DRIVER_TIMEOUT_S`` and a new run resumes
every slot; a finished run run again sends nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from shardline import (
    CheckpointLock,
    ConfigError,
    PipelineConfig,
    RunSummary,
    StreamSink,
    make_display,
)

from shardline_dask.cluster import connect
from shardline_dask.layout import Layout, pin_layout, state_dir
from shardline_dask.slot import SlotJob, run_slot

POLL_S = 0.25
"""How often the driver looks at the slots (progress, failures, stop)."""
_SUMMED = (
    "records", "bytes", "requests", "retries", "dead_letters", "batches_read", "rows_read",
    "batches_acked", "rows_acked", "checkpoint_writes", "undelivered", "nonfinite_floats",
)  # fmt: skip


def run_on_dask(
    config: PipelineConfig,
    *,
    allow_dead_letters: bool = False,
    progress: bool | None = False,
    handle_signals: bool = False,
    stop_timeout_s: float = 5.0,
    on_start: Callable[[], None] | None = None,
) -> RunSummary:
    """Run ``config`` on the Dask cluster of ``config.engine.address``; return the summed summary.

    Raises :class:`~shardline.ConfigError` (a split the source cannot do, an unreachable
    scheduler), :class:`~shardline.CheckpointError` (another pipeline's layout, another split,
    a run of it already going) and whatever a slot raised (e.g. :class:`~shardline.DeliveryError`).
    """
    engine = config.engine
    make_plan = getattr(config.source_cls, "make_plan", None)
    if engine.split == "files" and make_plan is None:
        raise ConfigError(
            f'engine.split: "files" needs a source with a plan of files (parquet), not {config.source_type!r}'
        )
    if config.sink.stream.lower().startswith("local://"):
        raise ConfigError(
            "sink.stream: a local:// store belongs to one process, and a Dask run writes from many; "
            "serve it (shardline serve --data-dir DIR) and use its http:// URL"
        )
    plan = make_plan(config.source_options) if make_plan is not None else None  # once, on the driver
    base = config.checkpoint.path if config.checkpoint is not None else None
    lock = CheckpointLock(base) if base is not None else None
    here = state_dir(base) if base is not None else Path(".shardline") / "dask"
    locked = lock if lock is not None else contextlib.nullcontext()
    with locked, connect(engine.address, here / "dask-scratch") as client:
        started = time.monotonic()  # the summary's rate leaves the cluster's start-up out
        slots = engine.workers or _worker_count(client)
        wanted = Layout(engine.split, slots, _shard_count(config))
        layout, _resumed = (
            pin_layout(base, config.fingerprint(), wanted) if base is not None else (wanted, False)
        )
        if on_start is not None:
            on_start()
        return _Driver(client, config, layout, plan, base, stop_timeout_s).run(
            started, progress, handle_signals, allow_dead_letters
        )


def _worker_count(client: Any) -> int:
    client.wait_for_workers(1, timeout=60)
    return max(1, len(client.scheduler_info()["workers"]))


def _shard_count(config: PipelineConfig) -> int:
    """The stream's shard count now (creating the stream when ``[sink] create`` asks for it)."""
    sink = StreamSink(config.sink.stream, **config.sink_kwargs())
    try:
        return sink.shard_count
    finally:
        sink.close(timeout=30)


class _Driver:
    """Submits the slots, watches them, forwards stops, sums their summaries."""

    def __init__(
        self,
        client: Any,
        config: PipelineConfig,
        layout: Layout,
        plan: Any,
        base: str | None,
        stop_timeout_s: float,
    ) -> None:
        self.client = client
        self.config = config
        self.layout = layout
        self.plan = plan
        self.base = base
        self.stop_timeout_s = stop_timeout_s
        self.run_id = uuid.uuid4().hex[:12]
        self.stopped_by: str | None = None
        self._previous: dict[int, Any] = {}

    def run(
        self, started: float, progress: bool | None, handle_signals: bool, allow_dead_letters: bool
    ) -> RunSummary:
        from distributed import Variable, wait

        layout = self.layout
        control = Variable(f"shardline-{self.run_id}-control", client=self.client)
        beat = 0
        control.set({"beat": beat, "stop": None})
        names = [f"shardline-{self.run_id}-slot-{i}" for i in range(layout.slots)]
        variables = [Variable(n, client=self.client) for n in names]
        for variable in variables:
            variable.set({})  # so that reading a slot's report never waits
        futures = self._submit()
        facts: dict[str, Any] = {}
        total = self._total_rows()
        if total is not None:
            facts["total_rows"] = total
        display = make_display(progress, f"{self.config.source_type} on dask x{layout.slots}", facts)
        reports: dict[int, dict[str, Any]] = {}
        if handle_signals:
            self._install()
        try:
            while not all(f.done() for f in futures):
                with contextlib.suppress(TimeoutError):
                    wait(futures, timeout=POLL_S, return_when="ALL_COMPLETED")
                beat += 1
                failed = next((f for f in futures if f.status == "error"), None)
                if failed is not None and self.stopped_by is None:
                    self.stopped_by = "a failed slot"
                control.set({"beat": beat, "stop": self.stopped_by})
                for i, variable in enumerate(variables):
                    with contextlib.suppress(Exception):
                        reports[i] = variable.get(timeout=5)
                rows, nbytes = self._progress(reports)
                display.update(rows, nbytes)
            results = []
            for future in futures:
                if future.status == "error":
                    raise future.exception()
                results.append(future.result())
        finally:
            display.close()
            self._restore()
            with contextlib.suppress(Exception):
                control.set({"beat": beat, "stop": self.stopped_by or "the run ended"})
            for variable in [control, *variables]:
                with contextlib.suppress(Exception):
                    variable.delete()
        return self._summary(results, started, allow_dead_letters)

    def _submit(self) -> list[Any]:
        layout, plan = self.layout, self.plan
        plans: list[Any]
        if plan is None:
            plans = [None] * layout.slots
        elif layout.split == "files":
            plans = plan.spread(layout.slots)
        else:
            [shared] = self.client.scatter([plan], broadcast=True)  # one copy per worker, not per task
            plans = [shared] * layout.slots
        futures = []
        for slot in range(layout.slots):
            job = SlotJob(
                config=self.config,
                slot=slot,
                layout=layout,
                progress_name=f"shardline-{self.run_id}-slot-{slot}",
                control_name=f"shardline-{self.run_id}-control",
                checkpoint_path=self.base,
                stop_timeout_s=self.stop_timeout_s,
            )
            futures.append(
                self.client.submit(
                    run_slot, job, plans[slot], key=f"shardline-{self.run_id}-{slot}", pure=False
                )
            )
        return futures

    def _total_rows(self) -> int | None:
        plan = self.plan
        if plan is None or getattr(plan, "filter", None) is not None:
            return None
        return int(plan.num_rows)

    def _progress(self, reports: dict[int, dict[str, Any]]) -> tuple[int, int]:
        """Rows of the source done by the cluster, and bytes written.

        ``shards``: every slot reads every row, so the cluster is as far as its slots on average
        (each row is written by the one slot that owns it); ``files``: the slots' rows add up.
        """
        positions = [int(r.get("done_rows", 0)) + int(r.get("rows_acked", 0)) for r in reports.values()]
        nbytes = sum(int(r.get("bytes", 0)) for r in reports.values())
        if self.layout.split == "shards":
            return sum(positions) // max(self.layout.slots, 1), nbytes
        return sum(positions), nbytes

    def _summary(self, results: list[dict[str, Any]], started: float, allow: bool) -> RunSummary:
        summary = RunSummary(allow_dead_letters=allow, seconds=time.monotonic() - started)
        for result in results:
            for name in _SUMMED:
                setattr(summary, name, getattr(summary, name) + int(result.get(name, 0)))
            for kind, n in (result.get("skipped") or {}).items():
                summary.skipped[kind] = summary.skipped.get(kind, 0) + int(n)
        stops = [r["stopped_by"] for r in results if r.get("stopped_by")]
        summary.stopped_by = self.stopped_by or (stops[0] if stops else None)
        resumed = [int(r.get("resumed_rows", 0)) for r in results]
        share = self.layout.slots if self.layout.split == "shards" else 1
        summary.resumed_rows = sum(resumed) // share
        summary.checkpoint = self.base
        summary.dead_letter_target = self.config.sink.dead_letter
        written = max(summary.records, 1)
        summary.metrics = {
            "runner": "dask",
            "split": self.layout.split,
            "slots": self.layout.slots,
            "shard_count_pinned": self.layout.shard_count,
            "read_amplification": summary.rows_read / written if summary.records else 0.0,
            "not_owned": sum(int((r.get("metrics") or {}).get("not_owned", 0)) for r in results),
            "slot_records": {int(r["slot"]): int(r.get("records", 0)) for r in results},
        }
        return summary

    # -- signals ----------------------------------------------------------------------------

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped_by is not None:
            raise KeyboardInterrupt  # second signal: abort; every slot's checkpoint still holds
        self.stopped_by = signal.Signals(signum).name
        print(
            f"shardline: {self.stopped_by}: stopping every slot; each delivers what is in flight for at "
            f"most {self.stop_timeout_s:g} s (signal again to abort at once)",
            file=sys.stderr,
        )
