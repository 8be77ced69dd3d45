"""Helpers of the bridge tests: a keyed topic, `shardline run` processes, reading a stream back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from shardline_v3io.client import V3ioClient

SHARDLINE = str(Path(sys.executable).parent / "shardline")


@dataclass
class KeyedTopic:
    """A topic of ``count`` messages; value ``b"KEY:SEQ"`` (SEQ counts per key) -> (partition, offset)."""

    name: str
    count: int
    where: dict[bytes, tuple[int, int]]


def produce_keyed_topic(bootstrap: str, name: str, count: int, keys: int, partitions: int = 4) -> KeyedTopic:
    """Create ``name`` and fill it with ``count`` keyed messages (``keys`` distinct keys)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20, acks=1)
    where: dict[bytes, tuple[int, int]] = {}
    seq = [0] * keys
    try:
        futures = []
        for i in range(count):
            k = i % keys
            key = b"key-%d" % k
            value = b"%s:%d" % (key, seq[k])
            seq[k] += 1
            futures.append((value, producer.send(name, key=key, value=value)))
        producer.flush()
        for value, future in futures:
            md = future.get(timeout=60)
            where[value] = (md.partition, md.offset)
    finally:
        producer.close()
    return KeyedTopic(name, count, where)


def pipeline_file(
    path: Path, *, bootstrap: str, topic: str, group: str, stream_url: str, source: str = "", sink: str = ""
) -> Path:
    """Write a Kafka -> stream pipeline file (the default bridge mapping: key -> PartitionKey, raw value)."""
    path.write_text(
        f"""
[source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
stop_at_end = true
{source}
[source.consumer]
session_timeout_ms = 6000
heartbeat_interval_ms = 2000

[sink]
stream = "{stream_url}"
create = {{ shards = 4 }}
{sink}

[mapping]
partition_key = "key"
data = "raw"
data_column = "value"
"""
    )
    return path


def start_bridge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``shardline run CONFIG`` with its output in ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen([SHARDLINE, "run", str(config)], stdout=out, stderr=subprocess.STDOUT)


def run_bridge(config: Path, log: Path, timeout: float = 240) -> str:
    """Run ``shardline run CONFIG`` to its end; return its output; fail on a non-zero exit."""
    proc = start_bridge(config, log)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text(errors="replace")
    assert code == 0, f"shardline run exited {code}:\n{output[-3000:]}"
    return output


async def _read(url: str, container: str, path: str) -> dict[int, list[tuple[bytes, str | None]]]:
    async with V3ioClient(url) as client:
        info = await client.describe_stream(container, path)
        out: dict[int, list[tuple[bytes, str | None]]] = {}
        for shard in range(info.shard_count):
            location = await client.seek(container, path, shard, "EARLIEST")
            records: list[tuple[bytes, str | None]] = []
            while True:
                got = await client.get_records(container, path, shard, location, limit=1000)
                records.extend((r.data, r.partition_key) for r in got.records)
                location = got.next_location
                if not got.records and got.records_behind_latest == 0:
                    break
            out[shard] = records
        return out


def read_stream(
    url: str, container: str = "bigdata", path: str = "bridged"
) -> dict[int, list[tuple[bytes, Any]]]:
    """Every record of every shard, in shard order: {shard: [(data, partition_key), ...]}."""
    return asyncio.run(_read(url, container, path))
