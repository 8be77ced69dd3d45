"""The pipeline runner: source -> :class:`~shardline.StreamSink` -> acks -> checkpoints.

::

    from shardline.pipeline import run_pipeline
    summary = run_pipeline("examples/backfill.toml", ["sink.create.shards=4"])
    print(summary.line()); raise SystemExit(summary.exit_code)

How a run goes:

1. The config is loaded and validated (:mod:`shardline.config`). The sink connects (creating the
   stream when ``[sink] create`` asks for it). A pipeline with a checkpoint first takes its lock
   (a second run of it refuses at once, :class:`~shardline.CheckpointLockedError`), then loads it;
   one written by another pipeline, or whose state the source's ``Checkpoint`` model refuses, is
   refused (:class:`~shardline.CheckpointError`).
2. A reader thread pulls ``(batch, token)`` from the source, runs the ``[[transform]]`` steps on it
   (:mod:`shardline.transforms`: rows they drop count as filtered, a batch a step fails on is
   dead-lettered) and writes the result to the sink with an ack callback for the source's batch.
   The sink calls the callbacks in write order once every record of a batch is written or
   dead-lettered; the callback acks the token to the source.
3. The main thread shows progress (on a terminal). A checkpoint writer saves the source's
   checkpoint after every acknowledged batch, one write at a time: acks that arrive during a write
   merge into the next one (:class:`~shardline.checkpoint.CoalescingCheckpointer`; ``[checkpoint]
   interval_s`` spaces writes further, default 0), and once more at the end. The checkpoint only
   ever covers acknowledged batches, so a run killed at any moment (even SIGKILL) resumes with no
   gap; what was in flight at the time (at most the sink's ``max_in_flight_bytes``) is sent again
   (at-least-once).
4. SIGINT or SIGTERM: stop reading and stop retrying at once; requests in flight finish and what
   was never sent may still go out, for at most ``stop_timeout_s`` (then what is in flight is
   cancelled); acknowledged batches are checkpointed, the rest stays unacknowledged for the next
   run. A signal while the sink is still connecting ends the run at once. A second signal aborts
   at once (the last checkpoint still holds).
5. The run ends with a :class:`RunSummary`. Its ``exit_code`` is 130 after SIGINT, 143 after
   SIGTERM (a stopped run is not a finished one), 1 after another stop or when records were
   dead-lettered (unless ``allow_dead_letters``), else 0.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from shardline.checkpoint import CheckpointLock, CheckpointStore, CoalescingCheckpointer
from shardline.config import PipelineConfig, load_pipeline
from shardline.errors import CheckpointError, ConfigError, DeliveryError, ShardlineError
from shardline.plugins import call_observers, register_plugin, unregister_plugin
from shardline.progress import Display, human_bytes, make_display, summary_extras
from shardline.redact import redact_url
from shardline.requeststats import RequestStats
from shardline.runstatus import RunStatus
from shardline.source import AckToken, Source
from shardline.transforms import StepFailed, TransformChain, check_pipeline, failed_rows, mapped_origin


@dataclass
class RunSummary:
    """What a run did; ``line()`` is the summary printed at the end of ``shardline run``."""

    records: int = 0
    bytes: int = 0
    requests: int = 0
    retries: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    batches_read: int = 0
    rows_read: int = 0
    batches_acked: int = 0
    rows_acked: int = 0
    stopped_by: str | None = None
    resumed_rows: int = 0
    checkpoint: str | None = None
    checkpoint_writes: int = 0
    dead_letter_target: str | None = None
    allow_dead_letters: bool = False
    undelivered: int = 0
    nonfinite_floats: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Records the source read and deliberately did not yield, by kind (its ``progress()["skipped"]``)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    """Request latency quantiles in seconds: ``{"p50": 0.004, "p99": 0.03}`` (empty: no request sent)."""
    retries_by_error: dict[str, int] = field(default_factory=dict)
    """Records retried, by the name of the error that made them fail (``{"TransportError": 120}``)."""
    endpoints: dict[str, str] = field(default_factory=dict)
    """What observers served during the run: ``{"metrics": "http://127.0.0.1:PORT/metrics"}``."""
    filtered: int = 0
    """Rows the ``[[transform]]`` steps dropped (acknowledged, never sent)."""

    @property
    def records_per_second(self) -> float:
        """Records written per second of the run."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """130 after SIGINT, 143 after SIGTERM, 1 after another stop or when records were
        dead-lettered and that is not allowed; else 0."""
        if self.stopped_by is not None:
            return {"SIGINT": 130, "SIGTERM": 143}.get(self.stopped_by, 1)
        if self.dead_letters and not self.allow_dead_letters:
            return 1
        return 0

    def line(self) -> str:
        """One line: records, bytes, requests, retries, dead letters, seconds, records/s."""
        stopped = f" (stopped by {self.stopped_by})" if self.stopped_by else ""
        if self.undelivered:
            stopped += f" ({self.undelivered:,} records not delivered)"
        if self.nonfinite_floats:
            stopped += f" ({self.nonfinite_floats:,} NaN/inf floats written as null)"
        if self.resumed_rows:
            stopped += f" (resumed after {self.resumed_rows:,} rows acknowledged earlier)"
        if self.filtered:
            stopped += f" ({self.filtered:,} rows filtered by transforms)"
        if self.skipped:
            stopped += " (skipped " + ", ".join(f"{n:,} {kind}" for kind, n in self.skipped.items()) + ")"
        return (
            f"shardline: {self.records:,} records, {human_bytes(self.bytes)}, {self.requests:,} requests, "
            f"{self.retries:,} retries, {self.dead_letters:,} dead letters in {self.seconds:.1f} s "
            f"({self.records_per_second:,.0f} records/s){summary_extras(self.latency, self.retries_by_error)}"
            f"{stopped}"
        )

    def problems(self) -> list[str]:
        """Messages for what makes the run fail (a stop before the end, dead letters when not allowed)."""
        out: list[str] = []
        if self.stopped_by is not None:
            left = f"; {self.undelivered:,} records read were not delivered" if self.undelivered else ""
            resume = (
                f"run the same command again to go on from the checkpoint {self.checkpoint}"
                if self.checkpoint
                else "the pipeline has no [checkpoint]: a new run starts from the beginning"
            )
            out.append(f"stopped by {self.stopped_by} before the source ended{left}; {resume}")
        if self.dead_letters and not self.allow_dead_letters:
            where = f" (see {self.dead_letter_target})" if self.dead_letter_target else ""
            out.append(
                f"{self.dead_letters:,} records could not be written and were dead-lettered{where}; "
                "pass --allow-dead-letters to accept that"
            )
        return out


class _Stop:
    """Signal handling: the first SIGINT/SIGTERM asks for a clean stop, a second one aborts."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.signal_name: str | None = None
        self.at: float | None = None
        self.opening = False  # while the sink connects, a signal interrupts the main thread at once
        self._on_stop = on_stop
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt  # second signal: abort now; the last checkpoint stays valid
        self.request(signal.Signals(signum).name)
        if self.opening:
            raise KeyboardInterrupt  # nothing was sent yet: stop connecting now

    def request(self, name: str) -> None:
        """Ask for a clean stop from code (tests, embedding applications)."""
        if self.signal_name is None:
            self.signal_name = name
            self.at = time.monotonic()
            self._on_stop()


class Runner:
    """Runs one pipeline. Most callers want :func:`run_pipeline`; tests may drive :meth:`stop`."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        allow_dead_letters: bool = False,
        progress: bool | None = None,
        sink_factory: Callable[..., Any] | None = None,
        stop_timeout_s: float = 5.0,
        on_start: Callable[[], None] | None = None,
        source_factory: Callable[[Any, dict[str, Any] | None], Source] | None = None,
    ) -> None:
        self.config = config
        self._on_start = on_start
        self._source_factory = source_factory
        self.stop_timeout_s = stop_timeout_s
        self._sink: Any = None
        self._aborted = False
        self._undelivered = 0
        self.allow_dead_letters = allow_dead_letters
        self.progress = progress
        self._sink_factory = sink_factory
        self._stop = _Stop(self._request_stop)
        self._source: Source | None = None
        self._lock = threading.Lock()
        self._acked_batches = 0
        self._acked_rows = 0
        self._read_batches = 0
        self._read_rows = 0
        self._reader_error: BaseException | None = None
        self._ack_error: BaseException | None = None
        self._close_error: BaseException | None = None
        self._checkpoint_saved_at: float | None = None
        self._stats: RequestStats | None = None
        self.status = RunStatus(self)
        """The live view of this run that observers get (``shardline_on_run_started``)."""
        self._filtered_rows = 0
        self._done_rows = 0
        self._checkpointer: CoalescingCheckpointer | None = None

    def facts(self) -> dict[str, int]:
        """Progress so far, readable from any thread: ``rows_read``, ``rows_acked``, ``done_rows``
        (acknowledged by earlier runs), ``records`` and ``bytes`` written (0 before the sink is open)."""
        metrics = getattr(self._sink, "metrics", None)
        return {
            "rows_read": self._read_rows,
            "rows_acked": self._acked_rows,
            "done_rows": self._done_rows,
            "records": int(getattr(metrics, "records", 0)),
            "bytes": int(getattr(metrics, "bytes", 0)),
        }

    def stop(self, reason: str = "stop()") -> None:
        """Ask the run to stop cleanly (as SIGTERM does)."""
        self._stop.request(reason)

    def _request_stop(self) -> None:
        if self._source is not None:
            self._source.stop()
        stop = getattr(self._sink, "stop", None)
        if stop is not None:
            stop()  # no more retries; thread-safe

    def _enforce_stop_timeout(self) -> None:
        """After a stop, give what is in flight ``stop_timeout_s``, then cancel it."""
        at = self._stop.at
        if at is None or self._aborted or time.monotonic() - at < self.stop_timeout_s:
            return
        self._aborted = True
        abort = getattr(self._sink, "abort", None)
        if abort is not None:
            abort()

    def run(self, *, handle_signals: bool = False, lock_wait_s: float = 0.0) -> RunSummary:
        """Run until the source is exhausted or a stop is requested; return the summary.

        A pipeline with a checkpoint holds its lock for the whole run: while another run of it
        is going, this raises :class:`~shardline.CheckpointLockedError` (after ``lock_wait_s``
        seconds of trying; default: at once), naming that run.
        """
        checkpoint = self.config.checkpoint
        if checkpoint is None:
            return self._observed(handle_signals=handle_signals)
        lock = CheckpointLock(checkpoint.path)
        lock.acquire(lock_wait_s)
        try:
            return self._observed(handle_signals=handle_signals)
        finally:
            lock.release()

    def _observed(self, *, handle_signals: bool) -> RunSummary:
        """:meth:`_run` between ``shardline_on_run_started`` and ``shardline_on_run_finished``."""
        self._stats = RequestStats(lambda: self.status.stream)
        stats_plugin = register_plugin(self._stats, name=f"shardline-run-stats-{id(self)}")
        summary: RunSummary | None = None
        try:
            summary = self._run(handle_signals=handle_signals)
            return summary
        finally:
            self.status.finished = True
            call_observers("shardline_on_run_finished", run=self.status, summary=summary)
            unregister_plugin(stats_plugin)

    def _run(self, *, handle_signals: bool) -> RunSummary:
        config = self.config
        store = None
        state = None
        if config.checkpoint is not None:
            store = CheckpointStore(config.checkpoint.path, config.fingerprint())
            state = store.load(config.source_cls)
        try:
            if self._source_factory is not None:
                source = self._source_factory(config.source_options, state)
            else:
                source = config.source_cls(config.source_options, checkpoint=state)
        except CheckpointError as exc:  # the source's own checks of the state: name the file
            if store is None or str(store.path) in str(exc):
                raise
            raise CheckpointError(f"checkpoint {store.path}: {exc}") from None
        self._source = source
        try:
            chain = _transform_chain(config)
        except BaseException:
            source.close()
            raise
        if handle_signals:
            self._stop.install()
        started = time.monotonic()
        sink = None
        display: Display | None = None
        done_rows = 0
        try:
            # observers start (e.g. the metrics exporter); one that cannot, for a user's reason, fails the run
            call_observers("shardline_on_run_started", reraise=(ShardlineError,), run=self.status)
            self._stop.opening = True
            try:
                sink = self._open_sink()
            except KeyboardInterrupt:
                if self._stop.signal_name is None:
                    raise
                return self._summary(None, started, done_rows, state, store)
            finally:
                self._stop.opening = False
            self._sink = sink
            if self._on_start is not None:
                self._on_start()  # the source is open, the checkpoint taken, the stream reached
            _notice_existing_stream(config, sink)
            if self._stop.signal_name is not None:
                self._request_stop()
            source.set_flush(sink.flush)
            source.set_dead_letter(_source_dead_letter(sink))
            display = make_display(self.progress, config.source_type, _safe_progress(source))
            done_rows = self._done_rows = int(_safe_progress(source).get("done_rows", 0))
            saved_state: dict[str, Any] | None = state
            checkpointer: CoalescingCheckpointer | None = None
            if store is not None:

                def save() -> None:
                    nonlocal saved_state
                    saved_state = self._save(store, source, saved_state)

                interval = config.checkpoint.interval_s if config.checkpoint else 0.0
                checkpointer = self._checkpointer = CoalescingCheckpointer(save, interval)
                checkpointer.start()
            reader = threading.Thread(
                target=self._read, args=(source, sink, chain), name="shardline-reader", daemon=True
            )
            reader.start()

            announced = False

            def tick() -> None:
                nonlocal announced
                if self._stop.signal_name is not None and not announced:
                    announced = True
                    if handle_signals:
                        print(
                            f"shardline: {self._stop.signal_name}: stopping; delivering what is in flight "
                            f"for at most {self.stop_timeout_s:g} s (signal again to abort at once)",
                            file=sys.stderr,
                        )
                self._enforce_stop_timeout()
                display.update(
                    done_rows + self._acked_rows,
                    sink.metrics.bytes,
                    _safe_progress(source),
                    self._filtered_rows,
                )
                if checkpointer is not None and checkpointer.error is not None:
                    raise checkpointer.error

            while reader.is_alive():
                reader.join(timeout=0.2)
                tick()
            closer = threading.Thread(
                target=self._close_sink, args=(sink,), name="shardline-close", daemon=True
            )
            closer.start()
            while closer.is_alive():
                closer.join(timeout=0.2)
                tick()
            if checkpointer is not None:
                checkpointer.close()  # the last write in flight ends first: one writer at a time
                if checkpointer.error is not None:
                    raise checkpointer.error
            if store is not None:
                self._save(store, source, saved_state)
            display.update(
                done_rows + self._acked_rows, sink.metrics.bytes, _safe_progress(source), self._filtered_rows
            )
            if self._reader_error is not None:
                raise self._reader_error
            if self._close_error is not None:
                raise self._close_error
            if self._ack_error is not None:
                raise self._ack_error
        finally:
            if self._checkpointer is not None:
                self._checkpointer.close()
            if display is not None:
                display.close()
            self._stop.restore()
            source.close()
            if chain is not None:
                chain.close()
        return self._summary(sink, started, done_rows, state, store)

    def _summary(
        self,
        sink: Any,
        started: float,
        done_rows: int,
        state: dict[str, Any] | None,
        store: CheckpointStore | None,
    ) -> RunSummary:
        config = self.config
        metrics = sink.metrics.snapshot() if sink is not None else {}
        return RunSummary(
            records=int(metrics.get("records", 0)),
            bytes=int(metrics.get("bytes", 0)),
            requests=int(metrics.get("requests", 0)),
            retries=int(metrics.get("retries", 0)),
            dead_letters=int(metrics.get("dead_letters", 0)),
            seconds=time.monotonic() - started,
            batches_read=self._read_batches,
            rows_read=self._read_rows,
            batches_acked=self._acked_batches,
            rows_acked=self._acked_rows,
            stopped_by=self._stop.signal_name,
            resumed_rows=done_rows if state else 0,
            checkpoint=str(store.path) if store is not None else None,
            checkpoint_writes=store.writes if store is not None else 0,
            dead_letter_target=config.sink.dead_letter,
            allow_dead_letters=self.allow_dead_letters,
            undelivered=self._undelivered,
            nonfinite_floats=int(metrics.get("nonfinite_floats", 0)),
            skipped=_skipped(self._source),
            metrics=metrics,
            latency=self._stats.quantiles() if self._stats is not None else {},
            retries_by_error=dict(self._stats.retries_by_error) if self._stats is not None else {},
            endpoints=dict(self.status.endpoints),
            filtered=self._filtered_rows,
        )

    # -- threads --------------------------------------------------------------------------------

    def _open_sink(self) -> Any:
        kwargs = self.config.sink_kwargs()
        if self._sink_factory is not None:
            return self._sink_factory(self.config.sink.stream, **kwargs)
        from shardline.sink import StreamSink

        return StreamSink(self.config.sink.stream, **kwargs)

    def _read(self, source: Source, sink: Any, chain: TransformChain | None = None) -> None:
        takes_origin = _accepts_keyword(sink.write, "origin")  # a sink_factory's sink may not
        try:
            for batch, token in source.batches():
                self._read_batches += 1
                self._read_rows += batch.num_rows
                ack = self._ack_callback(source, token, batch.num_rows)
                origin = source.origin(token) if takes_origin else None  # for dead letters
                if chain is not None:
                    batch, origin = self._transform(chain, batch, origin, sink, takes_origin)
                if origin is None:
                    sink.write(batch, ack=ack)
                else:
                    sink.write(batch, ack=ack, origin=origin)
                if self._stop.signal_name is not None:
                    break
        except DeliveryError as exc:
            if self._stop.signal_name is None:  # else the sink refused a batch as the run stops
                self._reader_error = exc
        except BaseException as exc:
            self._reader_error = exc

    def _transform(
        self, chain: TransformChain, batch: Any, origin: Any, sink: Any, takes_origin: bool
    ) -> tuple[Any, Any]:
        """The batch after the steps, with the origin of its rows; a batch a step fails on is
        dead-lettered and replaced by an empty one, so that its ack still comes in order."""
        columns = self.config.source_cls.origin_columns
        try:
            out, rows = chain.apply(batch)
        except StepFailed as failure:
            key = self.config.mapping.partition_key
            sink.dead_letter(failed_rows(batch, failure, columns, origin, key), "transform failed")
            return batch.slice(0, 0), None
        self._filtered_rows += max(batch.num_rows - out.num_rows, 0)
        return out, mapped_origin(rows, batch, columns, origin) if takes_origin else None

    def _ack_callback(self, source: Source, token: AckToken, rows: int) -> Callable[[], None]:
        def ack() -> None:
            try:
                source.ack(token)
            except BaseException as exc:  # never let a source bug kill the sink's thread
                if self._ack_error is None:
                    self._ack_error = exc
                return
            with self._lock:
                self._acked_batches += 1
                self._acked_rows += rows
            if self._checkpointer is not None:
                self._checkpointer.notify()

        return ack

    def _close_sink(self, sink: Any) -> None:
        try:
            sink.close(timeout=None)  # after a stop, _enforce_stop_timeout bounds it
        except DeliveryError as exc:
            if self._stop.signal_name is not None and exc.undelivered:
                self._undelivered = exc.undelivered
            else:
                self._close_error = exc
        except BaseException as exc:
            self._close_error = exc

    def _save(
        self, store: CheckpointStore, source: Source, saved: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        state = source.checkpoint()
        if state != saved:
            store.save(state, stream=redact_url(self.config.sink.stream), pid=os.getpid())
        self._checkpoint_saved_at = time.monotonic()  # the checkpoint covers every ack up to now
        return state


def _transform_chain(config: PipelineConfig) -> TransformChain | None:
    """The run's ``[[transform]]`` steps, checked against the source's schema when it declares one
    (raises :class:`~shardline.transforms.TransformError` naming the step and the column)."""
    if not config.transforms:
        return None
    check_pipeline(config)
    return TransformChain(config.transforms)


def _source_dead_letter(sink: Any) -> Callable[[list[dict[str, Any]], str], None]:
    """The function a source calls with rows it cannot turn into records: into the sink's dead letters."""

    def dead_letter(rows: list[dict[str, Any]], reason: str) -> None:
        records = []
        for row in rows:
            key = row.get("key")
            if isinstance(key, bytes):
                key = key.decode("utf-8", errors="backslashreplace")
            where = ", ".join(
                f"{k} {row[k]}" for k in ("topic", "partition", "offset") if row.get(k) is not None
            )
            error = str(row.get("error") or reason)
            origin = {k: row[k] for k in ("topic", "partition", "offset") if row.get(k) is not None}
            if origin and "key" in row:
                origin["key"] = key
            records.append(
                {
                    "data": row.get("value", row.get("data")) or b"",
                    "partition_key": key,
                    "row": row.get("offset", row.get("row")),
                    "error": f"{error} ({where})" if where else error,
                    "origin": origin or None,
                }
            )
        sink.dead_letter(records, reason)

    return dead_letter


def _accepts_keyword(function: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _skipped(source: Source | None) -> dict[str, int]:
    """The source's ``progress()["skipped"]`` counts (e.g. ``{"tombstones": 3}``), non-zero ones only."""
    facts = _safe_progress(source).get("skipped") if source is not None else None
    if not isinstance(facts, dict):
        return {}
    return {str(k): int(v) for k, v in facts.items() if isinstance(v, int) and v}


def _safe_progress(source: Source) -> dict[str, Any]:
    try:
        return dict(source.progress())
    except Exception:  # progress is a nicety; never fail a run for it
        return {}


def run_pipeline(
    config: str | os.PathLike[str] | PipelineConfig,
    overrides: Sequence[str] = (),
    *,
    allow_dead_letters: bool = False,
    progress: bool | None = False,
    handle_signals: bool = False,
    sink_factory: Callable[..., Any] | None = None,
    stop_timeout_s: float = 5.0,
    on_start: Callable[[], None] | None = None,
) -> RunSummary:
    """Load (unless given a :class:`PipelineConfig`) and run a pipeline; return its summary.

    ``progress``: True shows the rich bar, None shows it when stdout is a terminal, False (the
    default for library use) never. ``stop_timeout_s``: after a stop, how long requests in flight
    and records never sent may still go out before they are cancelled. ``on_start()`` is called
    once the source is open and the stream reached (the CLI prints its start line). ``handle_signals``
    installs the SIGINT/SIGTERM handlers (only from the main thread).
    ``sink_factory(stream, **kwargs)`` replaces :class:`StreamSink` (tests). Raises
    :class:`~shardline.ShardlineError` subclasses for bad configs, checkpoints and delivery
    failures; dead letters do not raise, they set ``summary.dead_letters`` and ``exit_code``.
    """
    if not isinstance(config, PipelineConfig):
        config = load_pipeline(config, overrides)
    if config.engine.type != "local":
        if sink_factory is not None:
            raise ConfigError(
                f'sink_factory runs only with [engine] type = "local", not {config.engine.type!r}'
            )
        from shardline.plugins import lookup

        run = lookup("runners", config.engine.type)  # PluginError: "pip install shardline-dask"
        summary: RunSummary = run(
            config,
            allow_dead_letters=allow_dead_letters,
            progress=progress,
            handle_signals=handle_signals,
            stop_timeout_s=stop_timeout_s,
            on_start=on_start,
        )
        return summary
    runner = Runner(
        config,
        allow_dead_letters=allow_dead_letters,
        progress=progress,
        sink_factory=sink_factory,
        stop_timeout_s=stop_timeout_s,
        on_start=on_start,
    )
    return runner.run(handle_signals=handle_signals)


def _notice_existing_stream(config: PipelineConfig, sink: Any) -> None:
    """Say, in one line on stderr, that ``[sink] create`` did not apply: the stream already existed
    with another shard count (``--set sink.create.shards=16`` on an existing 8-shard stream)."""
    create = config.sink.create
    shards = getattr(sink, "shard_count", None)
    if create is None or not isinstance(shards, int) or shards == create.shards:
        return
    print(
        f"shardline: notice: {config.sink.stream} already exists with {shards} shards; "
        f"[sink] create (shards = {create.shards}) applies only to a missing stream, "
        f"so the run writes to {shards} shards",
        file=sys.stderr,
    )
