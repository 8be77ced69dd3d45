"""shardline: move Arrow record batches into PutRecords-compatible streams.

The public API is re-exported here; everything else is private by convention.
"""

from __future__ import annotations

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
    TransportError,
)
from shardline.hookspecs import hookimpl
from shardline.metrics import SinkMetrics
from shardline.partitioning import Partitioner, ShardMap
from shardline.records import RecordMapping
from shardline.sink import AsyncStreamSink, StreamSink
from shardline.source import AckToken, Source, SourceOptions
from shardline.transport import PutRecord, PutResult, StreamInfo, Transport

__all__ = [
    "AccessDeniedError",
    "AckToken",
    "AsyncStreamSink",
    "CheckpointError",
    "ConfigError",
    "DeliveryError",
    "Partitioner",
    "PluginError",
    "PutRecord",
    "PutResult",
    "RecordMapping",
    "RecordTooLargeError",
    "SchemaError",
    "ShardMap",
    "ShardlineError",
    "SinkMetrics",
    "Source",
    "SourceOptions",
    "StreamExistsError",
    "StreamInfo",
    "StreamNotFoundError",
    "StreamSink",
    "Transport",
    "TransportError",
    "hookimpl",
]
