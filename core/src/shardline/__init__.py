"""shardline: move Arrow record batches into PutRecords-compatible streams.

The public API is re-exported here; everything else is private by convention.

The names are imported lazily (PEP 562): ``import shardline`` costs nothing, so the pytest plugin
that every pytest run of a project with shardline installed loads (``shardline.testing``), and
``shardline --help``, do not import pyarrow, numpy or pydantic until something uses them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardline.checkpoint import CheckpointLockedError, CheckpointStore
    from shardline.config import PipelineConfig, load_pipeline
    from shardline.deadletter import DeadLetterWriter, dead_letter_entry
    from shardline.errors import (
        AccessDeniedError,
        CheckpointError,
        ConfigError,
        DeliveryError,
        PluginError,
        RecordTooLargeError,
        SchemaError,
        ShardlineError,
        StreamExistsError,
        StreamNotFoundError,
        StreamUnreachableError,
        TransportError,
    )
    from shardline.hookspecs import hookimpl
    from shardline.metrics import SinkMetrics
    from shardline.partitioning import Partitioner, ShardMap
    from shardline.pipeline import RunSummary, run_pipeline
    from shardline.plugins import register_plugin
    from shardline.records import RecordMapping
    from shardline.redact import redact_url
    from shardline.sink import AsyncStreamSink, StreamSink
    from shardline.sink_options import SinkOptions
    from shardline.source import AckToken, Source, SourceCheckpoint, SourceOptions
    from shardline.transport import (
        HashRange,
        PutBodyResult,
        PutFailure,
        PutRecord,
        PutResult,
        StreamInfo,
        Transport,
        TransportOptions,
    )
    from shardline.wire import Outcome, Placement, RequestOutcome, Wire, WireLimits

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "CheckpointLockedError": "shardline.checkpoint",
    "CheckpointStore": "shardline.checkpoint",
    "PipelineConfig": "shardline.config",
    "DeadLetterWriter": "shardline.deadletter",
    "dead_letter_entry": "shardline.deadletter",
    "load_pipeline": "shardline.config",
    "AccessDeniedError": "shardline.errors",
    "CheckpointError": "shardline.errors",
    "ConfigError": "shardline.errors",
    "DeliveryError": "shardline.errors",
    "PluginError": "shardline.errors",
    "RecordTooLargeError": "shardline.errors",
    "SchemaError": "shardline.errors",
    "ShardlineError": "shardline.errors",
    "StreamExistsError": "shardline.errors",
    "StreamNotFoundError": "shardline.errors",
    "StreamUnreachableError": "shardline.errors",
    "TransportError": "shardline.errors",
    "hookimpl": "shardline.hookspecs",
    "SinkMetrics": "shardline.metrics",
    "Partitioner": "shardline.partitioning",
    "ShardMap": "shardline.partitioning",
    "RunSummary": "shardline.pipeline",
    "run_pipeline": "shardline.pipeline",
    "register_plugin": "shardline.plugins",
    "RecordMapping": "shardline.records",
    "redact_url": "shardline.redact",
    "AsyncStreamSink": "shardline.sink",
    "StreamSink": "shardline.sink",
    "SinkOptions": "shardline.sink_options",
    "AckToken": "shardline.source",
    "Source": "shardline.source",
    "SourceCheckpoint": "shardline.source",
    "SourceOptions": "shardline.source",
    "PutRecord": "shardline.transport",
    "PutResult": "shardline.transport",
    "PutBodyResult": "shardline.transport",
    "PutFailure": "shardline.transport",
    "HashRange": "shardline.transport",
    "StreamInfo": "shardline.transport",
    "Transport": "shardline.transport",
    "TransportOptions": "shardline.transport",
    "Outcome": "shardline.wire",
    "Placement": "shardline.wire",
    "RequestOutcome": "shardline.wire",
    "Wire": "shardline.wire",
    "WireLimits": "shardline.wire",
}

__all__ = [
    "AccessDeniedError",
    "AckToken",
    "AsyncStreamSink",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointStore",
    "ConfigError",
    "DeadLetterWriter",
    "DeliveryError",
    "HashRange",
    "Outcome",
    "Partitioner",
    "PipelineConfig",
    "Placement",
    "PluginError",
    "PutBodyResult",
    "PutFailure",
    "PutRecord",
    "PutResult",
    "RecordMapping",
    "RecordTooLargeError",
    "RequestOutcome",
    "RunSummary",
    "SchemaError",
    "ShardMap",
    "ShardlineError",
    "SinkMetrics",
    "SinkOptions",
    "Source",
    "SourceCheckpoint",
    "SourceOptions",
    "StreamExistsError",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamSink",
    "StreamUnreachableError",
    "Transport",
    "TransportError",
    "TransportOptions",
    "Wire",
    "WireLimits",
    "dead_letter_entry",
    "hookimpl",
    "load_pipeline",
    "redact_url",
    "register_plugin",
    "run_pipeline",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, ``shardline.errors``) on first use."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"shardline.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"shardline.{name}":
                raise
    raise AttributeError(f"module 'shardline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
