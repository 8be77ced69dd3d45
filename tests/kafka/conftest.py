"""Fixtures of the Kafka tests: topics over `kafka_broker` (a real broker, from shardline_kafka.testing)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from shardline_kafka.broker import RunningBroker

_names = itertools.count()


@pytest.fixture
def bootstrap(kafka_broker: RunningBroker) -> str:
    """``host:port`` of the session broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def make_topic(bootstrap: str) -> Callable[..., str]:
    """Create a fresh topic (unique name) with the given partition count; returns its name."""

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{prefix}-{next(_names)}-{id(make) % 100000}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        return name

    return make


@pytest.fixture
def producer(bootstrap: str) -> Iterator[KafkaProducer]:
    """A kafka-python producer tuned for throughput (flush before reading)."""
    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, batch_size=512 * 1024, acks=1)
    try:
        yield prod
    finally:
        prod.close()
