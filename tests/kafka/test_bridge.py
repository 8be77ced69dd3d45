"""Kafka -> stream bridging end to end: `shardline run` processes, a real broker, the real server.

One topic of 100,000 keyed messages (4 partitions, 500 keys) is produced once per module; each test
bridges it with its own consumer group into its own stream and reads the stream back.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from shardline_v3io.testing_server import RunningServer, start_server

from .bridge import (
    SHARDLINE,
    KeyedTopic,
    pipeline_file,
    produce_keyed_topic,
    read_stream,
    run_bridge,
    start_bridge,
)
from .helpers import committed

pytest.importorskip("shardline.pipeline", reason="`shardline run` needs the pipeline runner")

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

COUNT = 100_000
_groups = itertools.count()


@pytest.fixture(scope="module")
def keyed_topic(kafka_broker) -> KeyedTopic:
    """100k messages ``key-K:SEQ`` over 500 keys in a 4-partition topic."""
    return produce_keyed_topic(kafka_broker.bootstrap, f"keyed-{id(kafka_broker)}", COUNT, keys=500)


@pytest.fixture(scope="module")
def small_topic(kafka_broker) -> KeyedTopic:
    """5,000 messages over 50 keys in a 4-partition topic (for runs against a faulty server).

    Big enough that the bridge is still running when it is killed, even now that the sink keeps
    its pace under 30% record faults (a 200-message topic was done before the kill).
    """
    return produce_keyed_topic(kafka_broker.bootstrap, f"small-{id(kafka_broker)}", 5_000, keys=50)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh embedded stream server."""
    with start_server(tmp_path / "streams") as srv:
        yield srv


def _group() -> str:
    return f"bridge-{next(_groups)}-{time.monotonic_ns() % 10**6}"


def _data(stream: dict[int, list[tuple[bytes, object]]]) -> list[bytes]:
    return [data for records in stream.values() for data, _key in records]


def _assert_key_order(stream: dict[int, list[tuple[bytes, object]]]) -> None:
    """Per key, the first arrival of each SEQ comes in SEQ order, and a key lives in one shard."""
    shard_of: dict[bytes, int] = {}
    last: dict[bytes, int] = {}
    for shard, records in stream.items():
        for data, key in records:
            k, _, seq = data.rpartition(b":")
            assert key == k.decode(), "PartitionKey must be the Kafka key"
            assert shard_of.setdefault(k, shard) == shard, f"key {k!r} in two shards"
            n = int(seq)
            if n > last.get(k, -1):
                assert n == last.get(k, -1) + 1, f"key {k!r}: {n} after {last.get(k)}"
                last[k] = n


def _wait_committed(
    bootstrap: str, group: str, topic: str, at_least: int, proc, deadline_s: float = 120
) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if sum(committed(bootstrap, group, topic).values()) >= at_least:
            return
        assert proc.poll() is None, "the bridge ended before it was killed"
    raise AssertionError(f"the bridge committed fewer than {at_least} offsets within {deadline_s} s")


def test_bridge_delivers_every_message_once_byte_for_byte_in_key_order(
    keyed_topic, bootstrap, server, tmp_path
):
    group = _group()
    config = pipeline_file(
        tmp_path / "bridge.toml",
        bootstrap=bootstrap,
        topic=keyed_topic.name,
        group=group,
        stream_url=f"{server.url}/bigdata/bridged",
    )
    output = run_bridge(config, tmp_path / "bridge.log")
    assert f"{COUNT:,} records" in output
    stream = read_stream(server.url)
    data = _data(stream)
    assert len(data) == COUNT
    assert set(data) == set(keyed_topic.where)  # Data == the Kafka value, byte for byte
    _assert_key_order(stream)
    assert sum(committed(bootstrap, group, keyed_topic.name).values()) == COUNT


def _kill_restart_and_check(
    topic: KeyedTopic,
    bootstrap,
    server,
    tmp_path,
    *,
    kill_at: int,
    batch: int = 500,
    max_tail: int | None = None,
) -> None:
    group = _group()
    config = pipeline_file(
        tmp_path / "bridge.toml",
        bootstrap=bootstrap,
        topic=topic.name,
        group=group,
        stream_url=f"{server.url}/bigdata/bridged",
        source=f"max_batch_records = {batch}",
        sink="[sink.limits]\nmax_in_flight_requests = 2",
    )
    log = tmp_path / "bridge.log"
    proc = start_bridge(config, log)
    try:
        _wait_committed(bootstrap, group, topic.name, kill_at, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    at_kill = committed(bootstrap, group, topic.name)
    assert sum(at_kill.values()) < topic.count, "the bridge had finished: nothing was left to kill"
    first = _data(read_stream(server.url))
    # committed offsets never pass a record that is not in the stream
    in_stream = set(first)
    for value, (partition, offset) in topic.where.items():
        if offset < at_kill.get((topic.name, partition), 0):
            assert value in in_stream, f"{value!r} at offset {offset} committed but not in the stream"

    def uncommitted(value: bytes) -> bool:
        partition, offset = topic.where[value]
        return offset >= at_kill.get((topic.name, partition), 0)

    tail = [v for v in first if uncommitted(v)]

    run_bridge(config, log)
    stream = read_stream(server.url)
    data = _data(stream)
    counts = collections.Counter(data)
    assert set(counts) == set(topic.where)  # nothing missing
    duplicates = [v for v, n in counts.items() if n > 1]
    assert all(counts[v] == 2 for v in duplicates)
    # duplicates are exactly the written-but-uncommitted tail at the kill, re-delivered once
    assert sorted(duplicates) == sorted(tail)
    if max_tail is not None:
        assert len(duplicates) <= max_tail
    _assert_key_order(stream)


def test_sigkill_halfway_then_restart_loses_nothing_and_repeats_only_the_unacknowledged_tail(
    keyed_topic, bootstrap, server, tmp_path
):
    # the tail is bounded by what the sink holds unacknowledged (its in-flight cap), far below this
    _kill_restart_and_check(keyed_topic, bootstrap, server, tmp_path, kill_at=COUNT // 3, max_tail=COUNT // 2)


def test_with_server_faults_committed_offsets_never_pass_an_unacknowledged_record(
    small_topic, bootstrap, tmp_path
):
    with start_server(tmp_path / "streams", fault_rate=0.3) as server:
        _kill_restart_and_check(
            small_topic, bootstrap, server, tmp_path, kill_at=small_topic.count // 5, batch=50
        )


def test_two_bridges_in_one_group_split_the_partitions_and_deliver_everything(
    keyed_topic, bootstrap, server, tmp_path
):
    group = _group()
    procs = []
    for i in range(2):
        config = pipeline_file(
            tmp_path / f"bridge{i}.toml",
            bootstrap=bootstrap,
            topic=keyed_topic.name,
            group=group,
            stream_url=f"{server.url}/bigdata/bridged",
            source="max_batch_records = 1000",
            sink="[sink.limits]\nmax_in_flight_requests = 2",
        )
        procs.append((start_bridge(config, tmp_path / f"bridge{i}.log"), tmp_path / f"bridge{i}.log"))
    delivered = []
    try:
        codes = [proc.wait(timeout=240) for proc, _log in procs]
    finally:
        for proc, _log in procs:
            if proc.poll() is None:
                proc.kill()
    for code, (_proc, log) in zip(codes, procs, strict=True):
        assert code == 0, log.read_text()[-3000:]
        line = [x for x in log.read_text().splitlines() if x.startswith("shardline:")][-1]
        delivered.append(int(line.split()[1].replace(",", "")))
    assert all(n > 0 for n in delivered), f"one bridge did all the work: {delivered}"
    data = _data(read_stream(server.url))
    missing = collections.Counter(keyed_topic.where[v][0] for v in set(keyed_topic.where) - set(data))
    assert not missing, (
        f"missing per partition {dict(missing)}; delivered {delivered}; "
        f"committed {committed(bootstrap, group, keyed_topic.name)}"
    )
    assert len(data) == sum(delivered)
    assert sum(committed(bootstrap, group, keyed_topic.name).values()) == COUNT


def test_the_example_bridge_file_runs_as_documented(bootstrap, make_topic, producer, server, tmp_path):
    topic = make_topic(2)
    messages = [(b"order-%d" % (i % 9), b'{"n": %d}' % i) for i in range(100)]
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    example = Path(__file__).parents[2] / "examples" / "kafka-bridge.toml"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP": _group(),
        "ORDERS_STREAM": f"{server.url}/bigdata/bridged",
    }
    overrides = [
        "source.stop_at_end=true",
        "source.consumer.session_timeout_ms=6000",
        "source.consumer.heartbeat_interval_ms=2000",
        f"sink.dead_letter={tmp_path / 'dead.jsonl'}",
    ]
    args = [SHARDLINE, "run", str(example)] + [x for o in overrides for x in ("--set", o)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    got = [(key.encode(), data) for records in read_stream(server.url).values() for data, key in records]
    assert collections.Counter(got) == collections.Counter(messages)
