"""shardline_kafka: a Kafka topic source for shardline, committed only after the sink acknowledges.

Public names are imported lazily (PEP 562), so that loading the package (its pytest plugin, its
shardline plugin) does not import kafka-python until a Kafka source is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardline_kafka.offsets import KafkaAckToken
    from shardline_kafka.options import KafkaCheckpoint, KafkaSourceOptions
    from shardline_kafka.source import KafkaSource

_EXPORTS = {
    "KafkaAckToken": "shardline_kafka.offsets",
    "KafkaCheckpoint": "shardline_kafka.options",
    "KafkaSourceOptions": "shardline_kafka.options",
    "KafkaSource": "shardline_kafka.source",
}

__all__ = ["KafkaAckToken", "KafkaCheckpoint", "KafkaSource", "KafkaSourceOptions"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shardline_kafka' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
