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
    from shardline.arrowbin import b64encode_array
    from shardline.checkpoint import CheckpointLockedError, CheckpointStore, describe_state_errors
    from shardline.cli import ShardlineGroup
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
    from shardline.expressions import FilterSyntaxError, compile_filter, filter_columns
    from shardline.hookspecs import hookimpl
    from shardline.metrics import SinkMetrics
    from shardline.ownership import ShardOwnership
    from shardline.partitioning import Partitioner, ShardMap, jump_hash_array
    from shardline.pipeline import Runner, RunSummary, run_pipeline
    from shardline.plugins import register_plugin, registered
    from shardline.progress import make_console, make_display
    from shardline.records import MappedColumns, RecordMapping
    from shardline.redact import redact_url
    from shardline.runstatus import RunStatus
    from shardline.sink import AsyncStreamSink, StreamSink
    from shardline.sink_options import SinkOptions
    from shardline.source import AckToken, Source, SourceCheckpoint, SourceGauge, SourceOptions
    from shardline.transforms import Transform, TransformError
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
    from shardline.wire import (
        Outcome,
        Placement,
        RequestOutcome,
        Wire,
        WireLimits,
        b64_fields,
        join_fragments,
        key_fields,
    )

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ShardlineGroup": "shardline.cli",
    "FilterSyntaxError": "shardline.expressions",
    "compile_filter": "shardline.expressions",
    "filter_columns": "shardline.expressions",
    "describe_state_errors": "shardline.checkpoint",
    "MappedColumns": "shardline.records",
    "jump_hash_array": "shardline.partitioning",
    "make_console": "shardline.progress",
    "registered": "shardline.plugins",
    "b64encode_array": "shardline.arrowbin",
    "join_fragments": "shardline.wire",
    "b64_fields": "shardline.wire",
    "key_fields": "shardline.wire",
    "CheckpointLock": "shardline.checkpoint",
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
    "ShardOwnership": "shardline.ownership",
    "Partitioner": "shardline.partitioning",
    "ShardMap": "shardline.partitioning",
    "Runner": "shardline.pipeline",
    "RunSummary": "shardline.pipeline",
    "run_pipeline": "shardline.pipeline",
    "register_plugin": "shardline.plugins",
    "make_display": "shardline.progress",
    "RecordMapping": "shardline.records",
    "redact_url": "shardline.redact",
    "RunStatus": "shardline.runstatus",
    "AsyncStreamSink": "shardline.sink",
    "StreamSink": "shardline.sink",
    "SinkOptions": "shardline.sink_options",
    "AckToken": "shardline.source",
    "Source": "shardline.source",
    "SourceCheckpoint": "shardline.source",
    "SourceGauge": "shardline.source",
    "SourceOptions": "shardline.source",
    "Transform": "shardline.transforms",
    "TransformError": "shardline.transforms",
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
    "CheckpointLock",
    "CheckpointLockedError",
    "CheckpointStore",
    "ConfigError",
    "DeadLetterWriter",
    "DeliveryError",
    "FilterSyntaxError",
    "HashRange",
    "MappedColumns",
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
    "RunStatus",
    "RunSummary",
    "Runner",
    "SchemaError",
    "ShardMap",
    "ShardOwnership",
    "ShardlineError",
    "ShardlineGroup",
    "SinkMetrics",
    "SinkOptions",
    "Source",
    "SourceCheckpoint",
    "SourceGauge",
    "SourceOptions",
    "StreamExistsError",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamSink",
    "StreamUnreachableError",
    "Transform",
    "TransformError",
    "Transport",
    "TransportError",
    "TransportOptions",
    "Wire",
    "WireLimits",
    "b64_fields",
    "b64encode_array",
    "compile_filter",
    "dead_letter_entry",
    "describe_state_errors",
    "filter_columns",
    "hookimpl",
    "join_fragments",
    "jump_hash_array",
    "key_fields",
    "load_pipeline",
    "make_console",
    "make_display",
    "redact_url",
    "register_plugin",
    "registered",
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
