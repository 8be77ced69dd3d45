"""The Kafka source against a real broker: columns, commits after ack, resume, end, start positions."""

from __future__ import annotations

import threading

import orjson
import pyarrow as pa
import pytest
from shardline import ConfigError
from shardline_kafka import KafkaSource, KafkaSourceOptions

from .helpers import committed, drain, make_source, new_group, produce

pytestmark = pytest.mark.kafka


def test_batches_carry_every_record_with_its_metadata(bootstrap, make_topic, producer):
    topic = make_topic(3)
    msgs = [(b"k%d" % (i % 7), b"value-%d" % i) for i in range(600)]
    placed = produce(producer, topic, msgs)
    producer.send(topic, key=None, value=b"with-headers", headers=[("h1", b"x"), ("h2", b"")], partition=0)
    producer.flush()
    source = make_source(bootstrap, topics=[topic], stop_at_end=True)
    try:
        table = drain(source)
    finally:
        source.close()
    assert table is not None and table.num_rows == 601
    assert table.schema.names == ["key", "value", "topic", "partition", "offset", "timestamp", "headers"]
    assert table.schema.field("key").type == pa.binary() and table.schema.field("value").type == pa.binary()
    rows = {(r["partition"], r["offset"]): r for r in table.to_pylist()}
    for (key, value), where in zip(msgs, placed, strict=True):
        row = rows[where]
        assert (row["key"], row["value"], row["topic"]) == (key, value, topic)
        assert row["headers"] == [] and row["timestamp"] is not None
    special = [r for r in rows.values() if r["value"] == b"with-headers"]
    assert special[0]["key"] is None
    assert special[0]["headers"] == [{"key": "h1", "value": b"x"}, {"key": "h2", "value": b""}]


def test_commits_only_what_was_acknowledged_and_a_restart_resumes_there(bootstrap, make_topic, producer):
    topic = make_topic(1)
    produce(producer, topic, [(b"k", b"%d" % i) for i in range(100)])
    group = new_group()
    first = make_source(bootstrap, topics=[topic], group_id=group, max_batch_records=10)
    seen = 0
    try:
        for batch, token in first.batches():
            seen += batch.num_rows
            if seen <= 30:
                first.ack(token)  # the sink wrote these
            if seen >= 50:
                break  # 30..49 yielded but never acknowledged
    finally:
        first.close()
    assert committed(bootstrap, group, topic) == {(topic, 0): 30}

    second = make_source(bootstrap, topics=[topic], group_id=group, stop_at_end=True)
    try:
        table = drain(second)
    finally:
        second.close()
    assert table is not None
    assert table.column("offset").to_pylist() == list(range(30, 100))
    assert committed(bootstrap, group, topic) == {(topic, 0): 100}


def test_stop_at_end_stops_at_the_offsets_seen_at_start(bootstrap, make_topic, producer):
    topic = make_topic(2)
    produce(producer, topic, [(b"k%d" % i, b"old") for i in range(50)])
    source = make_source(bootstrap, topics=[topic], stop_at_end=True, max_batch_records=5)
    rows = []
    try:
        for batch, token in source.batches():
            if not rows:  # the run has started: these must not be read
                produce(producer, topic, [(b"k%d" % i, b"new") for i in range(50)])
            rows.extend(batch.column("value").to_pylist())
            source.ack(token)
    finally:
        source.close()
    assert rows.count(b"old") == 50 and b"new" not in rows


def test_an_empty_topic_with_stop_at_end_yields_nothing_and_returns(bootstrap, make_topic):
    source = make_source(bootstrap, topics=[make_topic(2)], stop_at_end=True)
    try:
        assert drain(source) is None
    finally:
        source.close()


def test_regex_pattern_reads_matching_topics_only(bootstrap, make_topic, producer):
    a, b, other = (
        make_topic(1, prefix="orders-eu"),
        make_topic(2, prefix="orders-us"),
        make_topic(1, prefix="logs"),
    )
    for topic in (a, b, other):
        produce(producer, topic, [(b"k", topic.encode())] * 10)
    source = make_source(bootstrap, pattern=r"orders-.*", stop_at_end=True)
    try:
        table = drain(source)
    finally:
        source.close()
    assert table is not None
    topics = table.column("topic").to_pylist()
    assert topics.count(a) == 10 and topics.count(b) == 10 and other not in topics


def test_start_earliest_ignores_the_groups_commits(bootstrap, make_topic, producer):
    topic = make_topic(1)
    produce(producer, topic, [(b"k", b"%d" % i) for i in range(20)])
    group = new_group()
    for _ in range(2):
        source = make_source(bootstrap, topics=[topic], group_id=group, start="earliest", stop_at_end=True)
        try:
            table = drain(source)
        finally:
            source.close()
        assert table is not None and table.num_rows == 20  # both runs read everything


def test_start_latest_skips_what_is_already_there(bootstrap, make_topic, producer):
    topic = make_topic(1)
    for _ in range(
        20
    ):  # one record per produce batch: Tansu's ListOffsets(latest) is the last batch's base + 1
        produce(producer, topic, [(b"k", b"old")])
    source = make_source(bootstrap, topics=[topic], start="latest", stop_at_end=True)
    try:
        assert drain(source) is None
    finally:
        source.close()


def test_start_at_a_timestamp_begins_at_the_first_record_at_or_after_it(bootstrap, make_topic, producer):
    topic = make_topic(1)
    base = 1_700_000_000_000
    produce(producer, topic, [(b"k", b"%d" % i) for i in range(10)], timestamp_ms=base)
    produce(producer, topic, [(b"k", b"late%d" % i) for i in range(5)], timestamp_ms=base + 60_000)
    source = make_source(bootstrap, topics=[topic], start="2023-11-14T22:14:00Z", stop_at_end=True)
    try:
        table = drain(source)
    finally:
        source.close()
    assert table is not None
    assert table.column("value").to_pylist() == [b"late%d" % i for i in range(5)]


def test_json_values_become_columns_and_bad_ones_go_to_the_dead_letter(bootstrap, make_topic, producer):
    topic = make_topic(1)
    values = [
        b'{"id": 1, "name": "a"}',
        b"{not json",
        b'{"id": 2, "name": "b", "extra": 1.5}',
        b"[1, 2]",
        b'{"id": 3, "name": "c"}',
    ]
    produce(producer, topic, [(b"k", v) for v in values])
    group = new_group()
    source = make_source(bootstrap, topics=[topic], group_id=group, value_format="json", stop_at_end=True)
    dead: list[dict] = []
    source.set_dead_letter(lambda rows, reason: dead.extend(rows))
    try:
        table = drain(source)
    finally:
        source.close()
    assert table is not None
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.schema.field("id").type == pa.int64()
    assert table.column("extra").to_pylist() == [None, 1.5, None]
    assert table.column("offset").to_pylist() == [0, 2, 4]
    assert [(d["offset"], d["value"]) for d in dead] == [(1, b"{not json"), (3, b"[1, 2]")]
    assert all(d["topic"] == topic and d["partition"] == 0 and d["error"] for d in dead)
    assert committed(bootstrap, group, topic) == {(topic, 0): 5}  # past the dead-lettered records


def test_two_sources_in_one_group_split_partitions_and_commit_before_giving_them_up(
    bootstrap, make_topic, producer
):
    topic = make_topic(4)
    produce(producer, topic, [(b"k%d" % i, b"%d" % i) for i in range(400)])
    group = new_group()
    first = make_source(bootstrap, topics=[topic], group_id=group, max_batch_records=50)
    held: list = []  # tokens the "sink" of the first source holds; only its flush acks them
    flushes: list[int] = []

    def flush() -> None:
        flushes.append(len(held))
        for token in list(held):
            first.ack(token)

    first.set_flush(flush)
    second = make_source(bootstrap, topics=[topic], group_id=group, stop_at_end=True)
    result: dict = {}

    def run_second() -> None:
        try:
            assert first._joined.wait(60)
            result["table"] = drain(second)
            result["owned"] = set(second._assigned)
        finally:
            first.stop()

    thread = threading.Thread(target=run_second)
    thread.start()
    seen_first: list[tuple[int, int]] = []
    for batch, token in first.batches():
        seen_first += zip(
            batch.column("partition").to_pylist(), batch.column("offset").to_pylist(), strict=True
        )
        held.append(token)
    thread.join(120)
    owned_first = set(first._assigned)
    flush()  # what a pipeline does before closing
    first.close()
    second.close()
    assert flushes[0] > 0  # the rebalance flushed what the first source's sink held
    assert owned_first and result["owned"] and not (owned_first & result["owned"])
    table = result["table"]
    seen_second = []
    if table is not None:
        seen_second = list(
            zip(table.column("partition").to_pylist(), table.column("offset").to_pylist(), strict=True)
        )
    everything = seen_first + seen_second
    assert len(set(everything)) == 400
    assert len(everything) == 400  # held batches were committed before their partitions moved
    assert sum(committed(bootstrap, group, topic).values()) == 400


def test_unknown_options_and_bad_values_are_config_errors():
    with pytest.raises(ValueError, match="exactly one of"):
        KafkaSourceOptions(bootstrap_servers="x:1")
    with pytest.raises(ValueError, match="start"):
        KafkaSourceOptions(bootstrap_servers="x:1", topics=["t"], start="yesterday")
    with pytest.raises(ValueError, match="unknown kafka-python setting"):
        KafkaSourceOptions(bootstrap_servers="x:1", topics=["t"], consumer={"fetch_max_wait": 1})
    with pytest.raises(ValueError, match="extra"):
        KafkaSourceOptions(bootstrap_servers="x:1", topics=["t"], topicz=["t"])
    assert issubclass(ConfigError, Exception)


def test_unparsable_values_go_to_the_sources_dead_letter_file_with_their_offsets(
    bootstrap, make_topic, producer, tmp_path
):
    topic = make_topic(1)
    produce(producer, topic, [(b"k1", b'{"a": 1}'), (b"k2", b"\xff\xfe"), (b"k3", b'{"a": 2}'), (None, b"")])
    target = tmp_path / "bad.jsonl"
    source = make_source(
        bootstrap, topics=[topic], value_format="json", stop_at_end=True, dead_letter=str(target)
    )
    try:
        table = drain(source)
        assert source.progress()["dead_letters"] == 2
    finally:
        source.close()
    assert table is not None and table.column("a").to_pylist() == [1, 2]
    lines = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    assert [(d["topic"], d["partition"], d["offset"], d["row"]) for d in lines] == [
        (topic, 0, 1, 1),
        (topic, 0, 3, 3),
    ]
    assert lines[0]["stream"] == f"kafka:{topic}[0]" and lines[0]["partition_key"] == "k2"
    assert lines[0]["data_encoding"] == "base64" and "invalid JSON" in lines[0]["error"]


def test_stop_at_end_keeps_going_when_a_finished_member_leaves_the_group(bootstrap, make_topic, producer):
    topic = make_topic(4)
    produce(producer, topic, [(b"k%d" % i, b"%d" % i) for i in range(800)])
    group = new_group()
    slow = make_source(bootstrap, topics=[topic], group_id=group, stop_at_end=True, max_batch_records=10)
    fast = make_source(bootstrap, topics=[topic], group_id=group, stop_at_end=True)
    seen: dict[str, list] = {"slow": [], "fast": []}
    pace = threading.Event()  # never set: waiting on it paces the slow member

    def run(name, source, delay):
        try:
            for batch, token in source.batches():
                seen[name] += batch.column("offset").to_pylist()
                source.ack(token)
                pace.wait(delay)
        finally:
            source.close()  # leaving the group makes the other member rebalance

    threads = [
        threading.Thread(target=run, args=("slow", slow, 0.05)),
        threading.Thread(target=run, args=("fast", fast, 0)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert seen["fast"], "both members should have had partitions"
    assert len(seen["slow"]) + len(seen["fast"]) >= 800
    assert sum(committed(bootstrap, group, topic).values()) == 800  # nothing left behind


def test_an_unreachable_broker_is_a_config_error_naming_it():
    source = KafkaSource(
        KafkaSourceOptions(bootstrap_servers="127.0.0.1:1", topics=["t"], connect_timeout_s=1.5)
    )
    with pytest.raises(
        ConfigError, match=r"no broker at 127\.0\.0\.1:1 answered within 1\.5 s.*bootstrap_servers"
    ):
        next(source.batches())
    source.close()


def test_metadata_columns_choose_what_batches_carry(bootstrap, make_topic, producer):
    topic = make_topic(1)
    produce(producer, topic, [(b"k", b'{"a": 1, "offset": "mine"}')])
    raw = make_source(bootstrap, topics=[topic], stop_at_end=True, metadata_columns=["key"])
    parsed = make_source(
        bootstrap, topics=[topic], stop_at_end=True, value_format="json", metadata_columns=["offset"]
    )
    try:
        raw_table, parsed_table = drain(raw), drain(parsed)
    finally:
        raw.close()
        parsed.close()
    assert raw_table.schema.names == ["key", "value"]
    assert parsed_table.schema.names == ["a", "offset", "kafka_offset"]  # the JSON field keeps its name
    assert parsed_table.to_pylist() == [{"a": 1, "offset": "mine", "kafka_offset": 0}]


def test_security_options_reach_kafka_python_and_secrets_stay_out_of_reprs():
    options = KafkaSourceOptions(
        bootstrap_servers=["b1:9093", "b2:9093"],
        topics=["t"],
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="bridge",
        sasl_plain_password="s3cret",
        ssl_cafile="/etc/ca.pem",
        consumer={"fetch_max_wait_ms": 100},
    )
    config = options.consumer_config()
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "bridge" and config["sasl_plain_password"] == "s3cret"
    assert config["ssl_cafile"] == "/etc/ca.pem" and config["fetch_max_wait_ms"] == 100
    assert config["enable_auto_commit"] is False
    assert "s3cret" not in repr(options) and "s3cret" not in str(KafkaSource.resume_identity(options))
    with pytest.raises(ValueError, match="SASL_PLAINTEXT or SASL_SSL"):
        KafkaSourceOptions(bootstrap_servers="b:1", topics=["t"], sasl_mechanism="PLAIN")
    with pytest.raises(ValueError, match="enable_auto_commit cannot be set here"):
        KafkaSourceOptions(bootstrap_servers="b:1", topics=["t"], consumer={"enable_auto_commit": True})
