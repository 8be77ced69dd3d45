"""shardline_kafka: a Kafka topic source for shardline, committed only after the sink acknowledges."""

from __future__ import annotations

from shardline_kafka.offsets import KafkaAckToken
from shardline_kafka.options import KafkaCheckpoint, KafkaSourceOptions
from shardline_kafka.source import KafkaSource

__all__ = ["KafkaAckToken", "KafkaCheckpoint", "KafkaSource", "KafkaSourceOptions"]
