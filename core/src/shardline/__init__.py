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
from shardline.source import AckToken, Source, SourceOptions
from shardline.transport import PutRecord, PutResult, StreamInfo, Transport

__all__ = [
    "AccessDeniedError",
    "AckToken",
    "CheckpointError",
    "ConfigError",
    "DeliveryError",
    "PluginError",
    "PutRecord",
    "PutResult",
    "RecordTooLargeError",
    "SchemaError",
    "ShardlineError",
    "Source",
    "SourceOptions",
    "StreamExistsError",
    "StreamInfo",
    "StreamNotFoundError",
    "Transport",
    "TransportError",
    "hookimpl",
]
