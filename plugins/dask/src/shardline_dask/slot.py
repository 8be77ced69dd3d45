"""One slot of a Dask run: a whole :class:`shardline.Runner` inside a Dask task, on a worker.

A slot runs the pipeline as one process would (same sink, acks, coalesced checkpoints), with
three differences: its checkpoint is its slot's file (see :mod:`shardline_dask.layout`); with
``split = "shards"`` its sink writes only the rows of the shards it owns
(:class:`shardline.ShardOwnership`); and its source may be built from a plan the driver computed
(``plan``). It reports its progress to the driver through a Dask ``Variable`` twice a second and
stops cleanly when the driver says so through the run's control ``Variable``, or when the driver's
heartbeat in it stops for :data:`DRIVER_TIMEOUT_S` (the driver was killed: a resumed driver must
not find a slot of the dead run still writing), or when its worker closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Any

from shardline import PipelineConfig, Runner, ShardOwnership, StreamSink

from shardline_dask.layout import Layout, slot_checkpoint

REPORT_EVERY_S = 0.5
"""How often a slot tells the driver how far it is (one small scheduler message)."""
DRIVER_TIMEOUT_S = 10.0
"""A slot stops when the driver's heartbeat has not moved for this long."""
LOCK_WAIT_S = 60.0
"""How long a retried slot waits for the lock of an earlier attempt that is still ending."""


@dataclasses.dataclass(frozen=True)
class SlotJob:
    """What the driver sends a slot: the pipeline, its slot, the layout and the run's Dask names."""

    config: PipelineConfig
    slot: int
    layout: Layout
    progress_name: str
    control_name: str
    checkpoint_path: str | None
    stop_timeout_s: float = 5.0


def slot_config(config: PipelineConfig, layout: Layout, slot: int, base: str | None) -> PipelineConfig:
    """``config`` with the slot's checkpoint file and a local engine (a slot runs in its process)."""
    checkpoint = config.checkpoint
    if checkpoint is not None and base is not None:
        path = str(slot_checkpoint(base, slot, layout.slots))
        checkpoint = checkpoint.model_copy(update={"path": path})
    engine = config.engine.model_copy(update={"type": "local", "address": None})
    return dataclasses.replace(config, checkpoint=checkpoint, engine=engine)


def run_slot(job: SlotJob, plan: Any = None) -> dict[str, Any]:
    """Run one slot to the end (or until stopped); return its :class:`~shardline.RunSummary` as a dict
    plus ``slot``. Runs on a Dask worker; raises what :meth:`shardline.Runner.run` raises."""
    from distributed import Variable, get_client, get_worker
    from distributed.worker import thread_state

    layout = job.layout
    owned = (
        ShardOwnership.slot(job.slot, layout.slots, layout.shard_count) if layout.split == "shards" else None
    )
    config = slot_config(job.config, layout, job.slot, job.checkpoint_path)

    def sink_factory(stream: str, **kwargs: Any) -> StreamSink:
        return StreamSink(stream, **kwargs, owned_shards=owned)

    source_factory = None
    if plan is not None:
        source_cls = config.source_cls

        def source_factory(options: Any, state: dict[str, Any] | None) -> Any:
            return source_cls(options, checkpoint=state, plan=plan)  # type: ignore[call-arg]

    runner = Runner(
        config,
        allow_dead_letters=True,  # the driver judges dead letters for the whole run
        progress=False,
        sink_factory=sink_factory,
        source_factory=source_factory,
        stop_timeout_s=job.stop_timeout_s,
    )
    client = get_client()
    progress = Variable(job.progress_name, client=client)
    control = Variable(job.control_name, client=client)
    worker = get_worker()
    key = getattr(thread_state, "key", None)  # this task's key: to notice the scheduler gave it up
    finished = threading.Event()

    def report() -> None:
        beat, beat_at = None, time.monotonic()
        while not finished.wait(REPORT_EVERY_S):
            try:
                progress.set({"slot": job.slot, **runner.facts()})
                state = control.get(timeout=REPORT_EVERY_S)
            except Exception:  # the scheduler is unreachable; the driver's heartbeat decides
                state = None
            if isinstance(state, dict):
                if state.get("stop"):
                    runner.stop(str(state["stop"]))
                if state.get("beat") != beat:
                    beat, beat_at = state.get("beat"), time.monotonic()
            if time.monotonic() - beat_at > DRIVER_TIMEOUT_S:
                runner.stop("the driver is gone")
            if worker.status.name in ("closing", "closed", "failed", "closing_gracefully"):
                runner.stop("the Dask worker is closing")
            task = worker.state.tasks.get(key) if key is not None else None
            if task is None or task.state in ("cancelled", "released", "forgotten"):
                runner.stop("the Dask scheduler gave the task up (its driver is gone)")

    reporter = threading.Thread(target=report, name=f"shardline-slot-{job.slot}-report", daemon=True)
    reporter.start()
    try:
        summary = runner.run(lock_wait_s=LOCK_WAIT_S)
    finally:
        finished.set()
        reporter.join(timeout=10)
    out = dataclasses.asdict(summary)
    out["slot"] = job.slot
    out["checkpoint_file"] = config.checkpoint.path if config.checkpoint else None
    out["facts"] = runner.facts()
    with contextlib.suppress(Exception):  # a last report; the result carries the same numbers
        progress.set({"slot": job.slot, **runner.facts()})
    return out
