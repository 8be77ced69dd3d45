"""A Kafka -> Kinesis bridge: ``shardline run`` with a real broker (Tansu or a container) into kinesalite.

Every message lands once, byte for byte, with its key as PartitionKey, in per-key order; the same
with 30% of the records throttled by the fault proxy (dropped before the emulator, answered
``ProvisionedThroughputExceededException``).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shardline_kinesis.streamtools import create_stream

from .conftest import assert_landed_once_in_key_order, boto3_client, keyed_records, landed

pytestmark = [pytest.mark.kafka]
run_pipeline = pytest.importorskip("shardline.pipeline").run_pipeline

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
MESSAGES = 1_500
_groups = itertools.count()


@pytest.fixture(scope="module")
def keyed_topic(kafka_broker: Any) -> tuple[str, list[tuple[str, bytes]]]:
    """A 4-partition topic of ``MESSAGES`` keyed binary messages (100 keys); returns (name, messages)."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    name = f"to-kinesis-{id(kafka_broker)}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(name, 4, 1)])
    finally:
        admin.close()
    messages = keyed_records(MESSAGES, keys=100, seed=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=20, acks=1)
    try:
        futures = [producer.send(name, key=key.encode(), value=value) for key, value in messages]
        producer.flush()
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close()
    return name, messages


def _bridge_file(tmp_path: Path, bootstrap: str, topic: str, stream_url: str) -> Path:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "to-kinesis-{next(_groups)}-{id(config) % 10_000}"
stop_at_end = true

[source.consumer]
session_timeout_ms = 6000
heartbeat_interval_ms = 2000

[sink]
stream = "{stream_url}"

[mapping]
partition_key = "key"
data = "raw"
data_column = "value"
"""
    )
    return config


def _bridge(tmp_path: Path, bootstrap: str, topic: str, stream_url: str) -> str:
    """``shardline run`` of the bridge, to its end (``stop_at_end``); its output."""
    config = _bridge_file(tmp_path, bootstrap, topic, stream_url)
    done = subprocess.run(
        [SHARDLINE, "run", str(config)], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, f"shardline run exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_kafka_bridge_into_kinesalite_lands_every_message_once_in_key_order(
    kinesalite: Any, kafka_broker: Any, keyed_topic: tuple[str, list[tuple[str, bytes]]], tmp_path: Path
) -> None:
    topic, messages = keyed_topic
    client = boto3_client(kinesalite.endpoint_url)
    name = kinesalite.unique_name("bridged")
    create_stream(client, name, 4)
    _bridge(tmp_path, kafka_broker.bootstrap, topic, kinesalite.stream_url(name))
    assert_landed_once_in_key_order(landed(client, name), messages)


def test_kafka_bridge_with_30_percent_throttling_loses_nothing_and_keeps_key_order(
    kinesalite: Any,
    kafka_broker: Any,
    keyed_topic: tuple[str, list[tuple[str, bytes]]],
    fault_proxy: Callable[..., Any],
    tmp_path: Path,
) -> None:
    topic, messages = keyed_topic
    proxy = fault_proxy(kinesalite.endpoint_url, rate=0.3, shape="tail", seed=9)
    client = boto3_client(kinesalite.endpoint_url)
    name = kinesalite.unique_name("bridged-throttled")
    create_stream(client, name, 4)
    url = kinesalite.stream_url(name, endpoint_url=proxy.url)
    config = _bridge_file(tmp_path, kafka_broker.bootstrap, topic, url)
    summary = run_pipeline(config)  # default backoff: an answer that wrote records only paces a shard
    assert summary.records == MESSAGES and summary.dead_letters == 0
    assert proxy.stats.injected >= 0.3 * MESSAGES
    assert_landed_once_in_key_order(landed(client, name), messages)
