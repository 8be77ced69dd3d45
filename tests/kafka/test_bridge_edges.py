"""`shardline run` bridges at the edges: no [mapping], tombstones, dead letters that say where they came from.

Each test runs the real `shardline` command against a real broker and the embedded stream server.
"""

from __future__ import annotations

import collections
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shardline
from shardline_v3io.testing_server import RunningServer, start_server

from .bridge import SHARDLINE, read_stream
from .helpers import produce

pytestmark = pytest.mark.kafka

_groups = itertools.count()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh embedded stream server."""
    with start_server(tmp_path / "streams") as srv:
        yield srv


def _bridge(tmp_path: Path, bootstrap: str, topic: str, stream_url: str, extra: str = "") -> Path:
    """A bridge file with no [mapping] table (the source's default mapping applies)."""
    path = tmp_path / "bridge.toml"
    path.write_text(
        f"""
[source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "edges-{next(_groups)}-{time.monotonic_ns() % 10**6}"
stop_at_end = true
consumer = {{ session_timeout_ms = 6000, heartbeat_interval_ms = 2000 }}

[sink]
stream = "{stream_url}"
create = {{ shards = 4 }}
{extra}
"""
    )
    return path


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHARDLINE, "run", str(config), *args], capture_output=True, text=True, timeout=240, check=False
    )


def test_a_bridge_without_mapping_keys_records_by_the_kafka_key_and_copies_values(
    bootstrap, make_topic, producer, server, tmp_path
) -> None:
    topic = make_topic(2)
    keyed = [(b"user-%d" % (i % 7), b"payload-%d" % i) for i in range(70)]
    unkeyed = [(None, b"no-key-%d" % i) for i in range(8)]
    produce(producer, topic, keyed + unkeyed)  # type: ignore[operator]
    done = _run(_bridge(tmp_path, bootstrap, topic, f"{server.url}/bigdata/bridged"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mapping: source default (kafka): partition_key=key, data=raw, data_column=value" in done.stderr
    stream = read_stream(server.url)
    got = [(key, data) for records in stream.values() for data, key in records]
    expected = [(k.decode(), v) for k, v in keyed] + [(None, v) for _k, v in unkeyed]
    assert collections.Counter(got) == collections.Counter(expected)
    shards_of_key = collections.defaultdict(set)
    for shard, records in stream.items():
        for _data, key in records:
            shards_of_key[key].add(shard)
    assert all(len(shards_of_key[f"user-{k}"]) == 1 for k in range(7))  # a key sticks to its shard
    assert len(shards_of_key[None]) > 1  # records without a key are spread round robin


def test_a_bridge_skips_tombstones_commits_past_them_and_counts_them(
    bootstrap, make_topic, producer, server, tmp_path
) -> None:
    topic = make_topic(1)
    produce(producer, topic, [(b"a", b"1"), (b"a", None), (b"b", b"2"), (b"b", None), (b"c", None)])  # type: ignore[list-item]
    done = _run(_bridge(tmp_path, bootstrap, topic, f"{server.url}/bigdata/bridged"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 records" in done.stdout and "(skipped 3 tombstones)" in done.stdout
    got = sorted(data for records in read_stream(server.url).values() for data, _key in records)
    assert got == [b"1", b"2"]


def test_a_record_the_stream_refuses_is_dead_lettered_with_its_topic_partition_offset_and_key(
    bootstrap, make_topic, producer, server, tmp_path
) -> None:
    topic = make_topic(1)
    long_key = b"k" * 300  # PartitionKey limit: 256 bytes
    produce(producer, topic, [(b"ok-0", b"a"), (long_key, b"too-long-key"), (b"ok-1", b"b")])
    dead = tmp_path / "dead.jsonl"
    config = _bridge(tmp_path, bootstrap, topic, f"{server.url}/bigdata/bridged", f'dead_letter = "{dead}"')
    done = _run(config, "--allow-dead-letters")
    assert done.returncode == 0, done.stderr[-2000:]
    [entry] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["origin"] == {"topic": topic, "partition": 0, "offset": 1, "key": long_key.decode()}
    assert entry["data"] == "too-long-key"
    assert "PartitionKey is 300 bytes" in entry["error"]


def test_a_parquet_dead_letter_target_keeps_the_origin_as_json_text(tmp_path) -> None:
    dead = tmp_path / "dead.parquet"
    batch = pa.record_batch(
        {
            "key": pa.array([b"a", b"b"], pa.binary()),
            "value": pa.array([b"fine", b"x" * (2**20 + 1)], pa.binary()),  # Data limit: 1 MiB
            "topic": ["orders", "orders"],
            "partition": pa.array([3, 3], pa.int32()),
            "offset": pa.array([41, 42], pa.int64()),
        }
    )
    with shardline.StreamSink(
        f"local://{tmp_path}/store/bigdata/out",
        create={"shards": 2},
        partition_key="key",
        data="raw",
        data_column="value",
        dead_letter=dead,
        origin_columns=["topic", "partition", "offset", "key", "not-a-column"],
    ) as sink:
        sink.write(batch)
    [row] = pq.read_table(dead).to_pylist()
    assert json.loads(row["origin"]) == {"topic": "orders", "partition": 3, "offset": 42, "key": "b"}


def test_an_unparsable_json_value_is_dead_lettered_with_the_same_origin(
    bootstrap, make_topic, producer, server, tmp_path
) -> None:
    topic = make_topic(1)
    produce(producer, topic, [(b"k0", b'{"n": 0}'), (b"k1", b"{not json"), (b"k2", b'{"n": 2}')])
    dead = tmp_path / "dead.jsonl"
    extra = f'dead_letter = "{dead}"'
    config = _bridge(tmp_path, bootstrap, topic, f"{server.url}/bigdata/bridged", extra)
    done = _run(config, "--allow-dead-letters", "--set", "source.value_format=json")
    assert done.returncode == 0, done.stderr[-2000:]
    [entry] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["origin"] == {"topic": topic, "partition": 0, "offset": 1, "key": "k1"}
    assert entry["data"] == "{not json"


def test_tombstones_empty_are_written_as_records_with_empty_data(
    bootstrap, make_topic, producer, server, tmp_path
) -> None:
    topic = make_topic(1)
    produce(producer, topic, [(b"a", b"1"), (b"a", None)])  # type: ignore[list-item]
    config = _bridge(tmp_path, bootstrap, topic, f"{server.url}/bigdata/bridged")
    done = _run(config, "--set", "source.tombstones=empty")
    assert done.returncode == 0, done.stderr[-2000:]
    got = [(key, data) for records in read_stream(server.url).values() for data, key in records]
    assert got == [("a", b"1"), ("a", b"")]


def test_tombstones_dead_letter_fail_the_run_unless_allowed_and_say_their_offsets(
    bootstrap, make_topic, producer, server, tmp_path
) -> None:
    topic = make_topic(1)
    produce(producer, topic, [(b"a", b"1"), (b"a", None)])  # type: ignore[list-item]
    dead = tmp_path / "dead.jsonl"
    extra = f'dead_letter = "{dead}"'
    config = _bridge(tmp_path, bootstrap, topic, f"{server.url}/bigdata/bridged", extra)
    done = _run(config, "--set", "source.tombstones=dead-letter")
    assert done.returncode == 1
    assert "1 records could not be written and were dead-lettered" in done.stderr
    [entry] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["origin"] == {"topic": topic, "partition": 0, "offset": 1, "key": "a"}
    assert entry["reason"].startswith("tombstone")
