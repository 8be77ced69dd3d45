"""Kafka tombstones (null values) and compressed topics, read by the source from a real broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from .helpers import committed, drain, make_source, produce

pytestmark = pytest.mark.kafka

# offsets 0..5: a tombstone at 1 and 4 (a compacted topic's deletes of k1 and k2)
MESSAGES = [
    (b"k1", b"v1"),
    (b"k1", None),
    (b"k2", b"v2"),
    (b"k3", b"v3"),
    (b"k2", None),
    (b"k4", b""),  # an empty value is not a tombstone
]


def _topic_with_tombstones(make_topic: Any, producer: KafkaProducer) -> str:
    topic = make_topic(1)
    produce(producer, topic, MESSAGES)  # type: ignore[arg-type]
    return topic


def test_tombstones_are_skipped_counted_and_committed_by_default(bootstrap, make_topic, producer) -> None:
    topic = _topic_with_tombstones(make_topic, producer)
    source = make_source(bootstrap, topics=[topic], start="earliest", stop_at_end=True)
    try:
        table = drain(source)
        facts = source.progress()
    finally:
        source.close()
    assert table is not None
    assert table.column("value").to_pylist() == [b"v1", b"v2", b"v3", b""]
    assert table.column("offset").to_pylist() == [0, 2, 3, 5]
    assert facts["tombstones"] == 2
    assert facts["skipped"] == {"tombstones": 2}
    assert committed(bootstrap, source.opts.group_id, topic) == {(topic, 0): 6}  # past the tombstones


def test_tombstones_dead_letter_reach_the_dead_letter_function_with_their_offsets(
    bootstrap, make_topic, producer
) -> None:
    topic = _topic_with_tombstones(make_topic, producer)
    source = make_source(
        bootstrap, topics=[topic], start="earliest", stop_at_end=True, tombstones="dead-letter"
    )
    dead: list[tuple[dict[str, Any], str]] = []
    source.set_dead_letter(lambda rows, reason: dead.extend((row, reason) for row in rows))
    try:
        table = drain(source)
        facts = source.progress()
    finally:
        source.close()
    assert table is not None and table.num_rows == 4
    assert [(row["offset"], row["key"], row["value"]) for row, _ in dead] == [
        (1, b"k1", None),
        (4, b"k2", None),
    ]
    assert all(row["topic"] == topic and row["partition"] == 0 for row, _ in dead)
    assert all(reason.startswith("tombstone") for _, reason in dead)
    assert facts["dead_letters"] == 2
    assert "skipped" not in facts


def test_tombstones_empty_become_records_with_empty_values(bootstrap, make_topic, producer) -> None:
    topic = _topic_with_tombstones(make_topic, producer)
    source = make_source(bootstrap, topics=[topic], start="earliest", stop_at_end=True, tombstones="empty")
    try:
        table = drain(source)
    finally:
        source.close()
    assert table is not None
    assert table.column("value").to_pylist() == [b"v1", b"", b"v2", b"v3", b"", b""]
    assert table.column("value").null_count == 0


def test_a_batch_of_only_tombstones_is_yielded_empty_so_its_offsets_are_committed(
    bootstrap, make_topic, producer
) -> None:
    topic = make_topic(1)
    produce(producer, topic, [(b"k1", None), (b"k2", None)])  # type: ignore[list-item]
    source = make_source(bootstrap, topics=[topic], start="earliest", stop_at_end=True)
    try:
        table = drain(source)
    finally:
        source.close()
    assert table is not None and table.num_rows == 0
    assert committed(bootstrap, source.opts.group_id, topic) == {(topic, 0): 2}


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
def test_compressed_topics_are_read_byte_for_byte(bootstrap, make_topic, codec: str) -> None:
    topic = make_topic(1)
    messages = [(b"k%d" % i, b"value-%d-" % i * 20) for i in range(200)]
    with_codec = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=20)
    try:
        produce(with_codec, topic, messages)
    finally:
        with_codec.close()
    source = make_source(bootstrap, topics=[topic], start="earliest", stop_at_end=True)
    try:
        table = drain(source)
    finally:
        source.close()
    assert table is not None
    assert (
        list(zip(table.column("key").to_pylist(), table.column("value").to_pylist(), strict=True)) == messages
    )


# Runs `shardline run` with some modules hidden, as in an install without the codecs extra.
_WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from shardline.cli import main
main(sys.argv[2:])
"""

_MODULES = {"lz4": "lz4,lz4.frame,lz4f,lz4framed", "zstd": "zstandard", "snappy": "snappy"}


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy"])
def test_a_missing_codec_is_one_line_naming_the_extra(bootstrap, make_topic, tmp_path: Path, codec) -> None:
    topic = make_topic(1)
    compressed = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
    try:
        produce(compressed, topic, [(b"k", b"v" * 100)])
    finally:
        compressed.close()
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
start = "earliest"
stop_at_end = true
consumer = {{ session_timeout_ms = 6000, heartbeat_interval_ms = 2000 }}

[sink]
stream = "local://{tmp_path}/store/bigdata/out"
create = {{ shards = 1 }}
"""
    )
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT, _MODULES[codec], "run", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {config}: kafka source: topics ['{topic}'] hold {codec}-compressed records and the "
        f'{codec} library is not installed: pip install "shardline-kafka[codecs]" (lz4, zstd and snappy)'
    ]
    assert "Traceback" not in done.stderr
