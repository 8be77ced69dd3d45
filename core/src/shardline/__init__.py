"""shardline: move Arrow record batches into PutRecords-compatible streams.

The public API is re-exported here; everything else is private by convention.
"""

from __future__ import annotations

from shardline.checkpoint import CheckpointLockedError, CheckpointStore
from shardline.config import PipelineConfig, load_pipeline
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
from shardline.source import AckToken, Source, SourceCheckpoint, SourceOptions
from shardline.transport import PutRecord, PutResult, StreamInfo, Transport

__all__ = [
    "AccessDeniedError",
    "AckToken",
    "AsyncStreamSink",
    "CheckpointError",
    "CheckpointLockedError",
    "CheckpointStore",
    "ConfigError",
    "DeliveryError",
    "Partitioner",
    "PipelineConfig",
    "PluginError",
    "PutRecord",
    "PutResult",
    "RecordMapping",
    "RecordTooLargeError",
    "RunSummary",
    "SchemaError",
    "ShardMap",
    "ShardlineError",
    "SinkMetrics",
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
    "hookimpl",
    "load_pipeline",
    "redact_url",
    "register_plugin",
    "run_pipeline",
]
