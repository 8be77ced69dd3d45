"""The plugin contract: pluggy hook specifications for the project name ``shardline``.

These docstrings are the plugin author's documentation.

A plugin is a module (or any object) with functions decorated by :data:`hookimpl`, published
through the entry-point group ``shardline`` of its distribution::

    # pyproject.toml
    [project.entry-points.shardline]
    http-poll = "shardline_http_poll"

    # shardline_http_poll.py
    import shardline

    class HttpPollSource(shardline.Source):
        ...

    @shardline.hookimpl
    def shardline_register_sources(register):
        register("http-poll", HttpPollSource)

``shardline plugins`` lists every plugin found and what it registered; a plugin that fails to
import or registers something invalid is listed with the reason and does not stop the others.
Built-in features register through these very hooks (``shardline.builtins``). Applications and
tests can register a plugin in-process with :func:`shardline.register_plugin`.

Registration hooks (``shardline_register_*``) are called once per process, the first time a
registry is needed, each with a ``register(name, value)`` callback. Names are unique per registry:
the first registration wins (built-ins first, then entry points by distribution name, whatever
``tryfirst``/``trylast`` says) and later ones are refused and reported naming both plugins: a
plugin can never replace a built-in source, transport, codec, partitioner or command. A
registration that breaks the contract (e.g. a source class with abstract methods left) is not
registered and lists its plugin as broken; ``shardline plugins`` then exits 1.

Observer hooks (``shardline_on_*``) are called as things happen: the request, retry, dead-letter,
ack and growth hooks by the sink engine, from its thread; ``shardline_on_run_started`` and
``_finished`` by the pipeline runner. They must be quick and must not block; an observer that
raises is ignored (and does not keep other observers from being called), except a
:class:`~shardline.ShardlineError` from ``shardline_on_run_started``, which fails the run at its
start (a metrics port that cannot be bound). An implementation may declare only the arguments it
uses; ``tryfirst``/``trylast`` order them as in pluggy. The Prometheus exporter
(:mod:`shardline.metrics_prometheus`) is built on these hooks alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "shardline"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def shardline_register_sources(register: Callable[[str, type[Any]], None]) -> None:
    """Register source classes by type name.

    Call ``register(name, cls)`` once per source. ``name`` (letters, digits, ``-``, ``_``, ``.``)
    is what a pipeline writes as ``[source] type = "<name>"``. ``cls`` must be a subclass of
    :class:`shardline.Source` whose ``Options`` attribute is a :class:`shardline.SourceOptions`
    subclass (a pydantic model that forbids unknown keys): it validates the rest of the
    ``[source]`` table, and its field constraints become the error messages users see. ``cls``
    must implement every abstract method of :class:`shardline.Source`, and should set
    ``Checkpoint`` to a :class:`shardline.SourceCheckpoint` subclass describing what
    ``checkpoint()`` returns: a loaded checkpoint is validated against it before ``cls`` is built.

    The pipeline calls ``cls(options, checkpoint=state_or_None)``, then iterates
    ``batches()`` (yielding ``(pyarrow.RecordBatch, token)``) in a reader thread, calls
    ``ack(token)`` from the sink's thread, in yield order, once every record of that batch is
    written or dead-lettered, saves ``checkpoint()`` (a small JSON-serialisable dict covering
    only acknowledged batches) from time to time, calls ``stop()`` from the main thread on
    SIGINT/SIGTERM and ``close()`` at the end. ``resume_identity(options)`` says which options a
    checkpoint depends on; ``progress()`` may give ``total_rows``/``done_rows`` for the progress
    bar. Check a source over fixed data with :func:`shardline.testing.check_source`.
    """


@hookspec
def shardline_register_transports(register: Callable[[str, Any], None]) -> None:
    """Register transport factories by URL scheme.

    Call ``register(scheme, factory)`` where ``scheme`` is a lower-case URL scheme such as
    ``"http"``, ``"v3io"``, ``"kinesis"`` or ``"local"``, and ``factory(url: str, **options)``
    returns a :class:`shardline.Transport` for a stream URL of that scheme. ``options`` come from
    the pipeline's ``[sink.transport]`` table (plus ``access_key`` from ``[sink]``). Declare them
    by setting ``factory.Options`` to a :class:`shardline.transport.TransportOptions` subclass:
    the config and ``StreamSink(transport_options=...)`` then validate them (unknown keys are
    errors) before the factory is called. Raise :class:`shardline.ConfigError` for a malformed URL.
    The factory is called when a sink opens; import heavy client libraries inside it, not at
    module level.

    Two optional attributes let ``shardline validate`` (and the config loader, so ``run`` too)
    refuse at once what the transport would refuse when it opens, without connecting:
    ``factory.validate(url, options)`` checks the URL's form and raises :class:`ConfigError` with
    the one-line message the factory itself would give (``options``: ``[sink.transport]`` plus
    ``access_key``); ``factory.max_shards`` (an int) is the most shards a stream can have, checked
    against ``[sink] create.shards``.
    """


@hookspec
def shardline_register_codecs(register: Callable[[str, Any], None]) -> None:
    """Register Data codecs by name.

    Call ``register(name, codec)`` where ``codec(batch: pyarrow.RecordBatch, mapping:
    shardline.RecordMapping)`` returns one Data value per row: a pyarrow binary array or a
    sequence of ``bytes``, in row order. ``name`` is what ``[mapping] data = "<name>"`` selects.
    Work column-at-a-time (pyarrow compute, numpy) rather than looping over rows in Python.
    Built-ins: ``json``, ``raw``, ``arrow``, ``template``.
    """


@hookspec
def shardline_register_partitioners(register: Callable[[str, Any], None]) -> None:
    """Register partitioners (partition key -> shard strategies) by name.

    Call ``register(name, partitioner)`` with a :class:`shardline.Partitioner`, or a plain
    ``per_key(keys, hashes, shard_count) -> numpy int64 array`` function that maps each
    *distinct* key of a batch (with its xxh64 hash) to a shard in ``[0, shard_count)``. ``name``
    is what ``[mapping] partitioner = "<name>"`` selects. Built-ins: ``hash``, ``modulo``,
    ``server``, ``column``, ``round-robin``.
    """


@hookspec
def shardline_register_transforms(register: Callable[[str, type[Any]], None]) -> None:
    """Register ``[[transform]]`` step kinds by name.

    Call ``register(name, cls)`` where ``cls`` is a subclass of :class:`shardline.Transform` and
    ``name`` is the key a step table uses: ``[[transform]]`` then ``<name> = <value>``. ``cls.Options``
    (a type such as ``str`` or ``dict[str, str]``, or a pydantic model for a table) validates the
    value; the runner calls ``cls(value)`` once per run, ``output_schema(schema)`` before anything
    is sent (raise :class:`shardline.TransformError` naming the ``column``), then ``apply(batch)``
    (or ``apply_rows``) on every ``pyarrow.RecordBatch`` from one thread, and ``close()``.
    ``apply`` may drop, add and reorder columns and drop rows, never reorder rows; when it raises,
    the batch's rows are dead-lettered with the error and the run goes on. Built-ins: ``sql``,
    ``filter``, ``select``, ``rename``, ``cast``, ``set`` (see :mod:`shardline.transforms`).
    """


@hookspec
def shardline_register_runners(register: Callable[[str, Any], None]) -> None:
    """Register pipeline runners by name: what ``[engine] type = "<name>"`` runs a pipeline with.

    Call ``register(name, run)`` where ``run(config, *, allow_dead_letters, progress,
    handle_signals, stop_timeout_s, on_start)`` runs the validated
    :class:`shardline.PipelineConfig` (its ``engine.address``, ``engine.workers`` and
    ``engine.split`` are the runner's to read) and returns a :class:`shardline.RunSummary`, with the
    meaning :func:`shardline.run_pipeline` gives those arguments. ``"local"`` (this process) is the
    core's and cannot be registered. A runner reuses :class:`shardline.Runner` for each piece of
    the work, so checkpoints, acks and stops behave as in one process. Import heavy libraries
    (a cluster client) inside ``run``.
    """


@hookspec
def shardline_register_commands(cli: Any) -> None:
    """Add sub-commands to the ``shardline`` command.

    ``cli`` is the root :class:`click.Group`; add commands with ``cli.add_command(cmd)`` or
    decorate them with ``@cli.command()``. Raise :class:`shardline.ShardlineError` subclasses
    for user errors: the CLI prints them as one line and exits 1. The core adds ``plugins``,
    ``validate`` and ``run``; the v3io connector adds ``serve`` this way.
    """


@hookspec
def shardline_on_batch_acked(stream: str, records: int, nbytes: int) -> None:
    """Called after every record of a written batch was written or dead-lettered.

    ``stream`` is the stream URL, ``records`` the records of the batch, ``nbytes`` their Data bytes.
    """


@hookspec
def shardline_on_shard_growth(stream: str, old_count: int, new_count: int) -> None:
    """Called after the sink swapped its shard map because the stream grew from ``old_count`` shards."""


@hookspec
def shardline_on_dead_letter(stream: str, record: dict[str, Any], reason: str) -> None:
    """Called for each record sent to the dead-letter target.

    ``record`` is the dead-letter entry (as written to the ``.jsonl`` file), ``reason`` why the
    record can never be written (too large, invalid, an opt-in retry deadline passed, ...).
    """


@hookspec
def shardline_on_retry(stream: str, shard_id: int | None, records: int, error: str, attempt: int) -> None:
    """Called each time the sink retries failed records of a request.

    ``shard_id`` is the shard of the retried records (when known), ``records`` how many records
    are retried, ``error`` the error (name or message), ``attempt`` how many times they were tried.
    """


@hookspec
def shardline_on_request(stream: str, records: int, nbytes: int, seconds: float, outcome: str) -> None:
    """Called once per PutRecords request the sink sent, when its answer (or failure) is known.

    ``records`` is how many records the request carried, ``nbytes`` the size of its body in bytes,
    ``seconds`` how long it took (wall clock, from send to answer), ``outcome`` one of
    ``"written"`` (every record written), ``"partial"`` (the stream refused some records; they are
    retried or dead-lettered, see :func:`shardline_on_retry`), ``"failed"`` (the request failed
    as a whole and is retried), ``"throttled"`` (failed as a whole because the stream throttled
    it) or ``"fatal"`` (the sink stopped: the stream is missing or access was denied).
    """


@hookspec
def shardline_on_run_started(run: Any) -> None:
    """Called when a pipeline run begins (its source is made, its sink not yet connected).

    ``run`` is a :class:`shardline.RunStatus`: a live, read-only view of the run (its config,
    the sink's :class:`~shardline.SinkMetrics` once connected, rows read and acknowledged, the
    source's gauges, readiness). An exporter may serve it (``run.config.metrics`` says where) and
    tell the run the address with ``run.announce(name, url)``; the run's start line and
    :attr:`RunSummary.endpoints` show it. Called from the thread that runs the pipeline.
    """


@hookspec
def shardline_on_run_finished(run: Any, summary: Any) -> None:
    """Called once when a pipeline run ends (finished, stopped or failed), before it returns.

    ``summary`` is the :class:`shardline.RunSummary` it returns (None when the run failed with an
    exception). Observers called earlier (``tryfirst``) still see an exporter started in
    :func:`shardline_on_run_started` serving the final numbers.
    """
