"""Helpers of the Kafka tests: produce, read committed offsets, drain a source."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from shardline_kafka import KafkaSource, KafkaSourceOptions
from shardline_kafka.broker import FAST_GROUP_SETTINGS

_groups = itertools.count()


def new_group() -> str:
    """A consumer group name no other test uses."""
    return f"g-{next(_groups)}-{id(_groups) % 10000}"


def make_source(bootstrap: str, **options: Any) -> KafkaSource:
    """A KafkaSource with fast group settings (Tansu joins take ~20 s with the defaults)."""
    options.setdefault("group_id", new_group())
    consumer = dict(FAST_GROUP_SETTINGS)
    consumer.update(options.pop("consumer", {}))
    return KafkaSource(KafkaSourceOptions(bootstrap_servers=bootstrap, consumer=consumer, **options))


def produce(
    producer: KafkaProducer, topic: str, messages: Iterable[tuple[bytes | None, bytes]], **kwargs: Any
) -> list[tuple[int, int]]:
    """Send ``(key, value)`` messages; returns (partition, offset) of each, in order."""
    futures = [producer.send(topic, key=k, value=v, **kwargs) for k, v in messages]
    producer.flush()
    return [(md.partition, md.offset) for md in (f.get(timeout=60) for f in futures)]


def committed(bootstrap: str, group: str, *topics: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets of ``topics`` as {(topic, partition): offset}."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        out = {}
        for topic in topics:
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                offset = consumer.committed(TopicPartition(topic, partition))
                if offset is not None:
                    out[(topic, partition)] = offset
        return out
    finally:
        consumer.close(autocommit=False)


def drain(
    source: KafkaSource, *, ack: bool = True, on_batch: Callable[[pa.RecordBatch], None] | None = None
) -> pa.Table | None:
    """Run ``source.batches()`` to its end (stop_at_end), acking each batch; returns all rows."""
    batches = []
    for batch, token in source.batches():
        batches.append(batch)
        if on_batch is not None:
            on_batch(batch)
        if ack:
            source.ack(token)
    return pa.Table.from_batches(batches) if batches else None


def tp(topic: str, partition: int) -> TopicPartition:
    """Shorthand."""
    return TopicPartition(topic, partition)
