"""The plugin contract: pluggy hook specifications for the project name ``shardline``.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, published through
the entry-point group ``shardline``. Built-in features register through these very hooks.

Registration hooks are called once at start-up, each with a ``register`` callback::

    @shardline.hookimpl
    def shardline_register_sources(register):
        register("http-poll", HttpPollSource)

Observer hooks are called by the engine as things happen; they must be quick and must not raise.
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

    Call ``register(name, cls)`` once per source. ``name`` is what a pipeline config writes as
    ``[source] type = "<name>"``; ``cls`` is a subclass of :class:`shardline.Source` whose
    ``Options`` pydantic model validates the rest of the ``[source]`` table.
    """


@hookspec
def shardline_register_transports(register: Callable[[str, Any], None]) -> None:
    """Register transport factories by URL scheme.

    Call ``register(scheme, factory)`` where ``scheme`` is e.g. ``"http"``, ``"v3io"``,
    ``"kinesis"`` or ``"local"`` and ``factory(url: str, **options) -> Transport`` builds a
    :class:`shardline.Transport` for a stream URL of that scheme.
    """


@hookspec
def shardline_register_codecs(register: Callable[[str, Any], None]) -> None:
    """Register Data codecs by name.

    Call ``register(name, codec)`` where ``codec(batch: pyarrow.RecordBatch, options) ->
    list[bytes]`` (or a pyarrow binary array) turns every row of the batch into a record's Data.
    Built-ins: ``json``, ``raw``, ``arrow``, ``template``.
    """


@hookspec
def shardline_register_partitioners(register: Callable[[str, Any], None]) -> None:
    """Register partitioners (partition key -> shard strategies) by name.

    Call ``register(name, partitioner)``. Built-ins: ``hash``, ``modulo``, ``server``,
    ``column``, ``round-robin``.
    """


@hookspec
def shardline_register_commands(cli: Any) -> None:
    """Add sub-commands to the ``shardline`` command.

    ``cli`` is the root :class:`click.Group`; decorate new commands with ``@cli.command()``.
    The v3io connector adds ``serve`` and ``stream`` this way.
    """


@hookspec
def shardline_on_batch_acked(stream: str, records: int, nbytes: int) -> None:
    """Called after every record of a source batch was written or dead-lettered and its token acked."""


@hookspec
def shardline_on_shard_growth(stream: str, old_count: int, new_count: int) -> None:
    """Called after the sink swapped its shard map because the stream grew."""


@hookspec
def shardline_on_dead_letter(stream: str, record: dict[str, Any], reason: str) -> None:
    """Called for each record sent to the dead-letter target, with the reason it could not be written."""


@hookspec
def shardline_on_retry(stream: str, shard_id: int | None, records: int, error: str, attempt: int) -> None:
    """Called each time the sink retries failed records of a request."""
