"""Transactional topics: a bridge reads committed data only and stop_at_end ends at the reachable end."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from kafka import KafkaProducer
from shardline_kafka import KafkaSourceOptions

from .helpers import make_source, produce

pytestmark = pytest.mark.kafka

_ids = itertools.count()


def _transactional_topic(
    bootstrap: str, make_topic: Any, producer: KafkaProducer, outcomes: tuple[str, ...]
) -> Iterator[str]:
    """A topic of 2 plain records, then one transaction of 2 records per outcome, in order.

    ``outcomes``: "committed", "aborted" or "open" (left open until the test ends).
    """
    topic = make_topic(1)
    produce(producer, topic, [(b"k", b"plain-0"), (b"k", b"plain-1")])
    tx = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{next(_ids)}-{topic}")
    try:
        tx.init_transactions()
        for outcome in outcomes:
            tx.begin_transaction()
            for i in range(2):
                tx.send(topic, key=b"k", value=f"{outcome}-{i}".encode())
            tx.flush()
            if outcome == "committed":
                tx.commit_transaction()
            elif outcome == "aborted":
                tx.abort_transaction()
        yield topic
    finally:
        tx.close(timeout=5)


@pytest.fixture
def open_transaction_topic(bootstrap: str, make_topic: Any, producer: KafkaProducer) -> Iterator[str]:
    """2 plain records, a committed transaction of 2, and an open one of 2."""
    yield from _transactional_topic(bootstrap, make_topic, producer, ("committed", "open"))


@pytest.fixture
def aborted_transaction_topic(bootstrap: str, make_topic: Any, producer: KafkaProducer) -> Iterator[str]:
    """2 plain records, an aborted transaction of 2, a committed one of 2."""
    yield from _transactional_topic(bootstrap, make_topic, producer, ("aborted", "committed"))


def _drain_within(source: Any, seconds: float) -> pa.Table | None:
    """Drain ``source`` (stop_at_end) on a thread; fail if it has not ended within ``seconds``."""
    out: dict[str, Any] = {}

    def run() -> None:
        batches = []
        try:
            for batch, token in source.batches():
                batches.append(batch)
                source.ack(token)
        except BaseException as exc:
            out["error"] = exc
        out["table"] = pa.Table.from_batches(batches) if batches else None

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        source.stop()
        thread.join(30)
        raise AssertionError(f"stop_at_end did not end within {seconds:g} s")
    if "error" in out:
        raise out["error"]
    return out["table"]


def test_a_bridge_reads_committed_data_only_by_default() -> None:
    options = KafkaSourceOptions(bootstrap_servers="b:9092", topics=["t"])
    assert options.isolation_level == "read_committed"
    assert options.consumer_config()["isolation_level"] == "read_committed"


def test_stop_at_end_under_read_committed_ends_while_a_transaction_is_open(
    bootstrap: str, open_transaction_topic: str
) -> None:
    source = make_source(bootstrap, topics=[open_transaction_topic], start="earliest", stop_at_end=True)
    try:
        table = _drain_within(source, 60)
    finally:
        source.close()
    assert table is not None
    assert table.column("value").to_pylist() == [b"plain-0", b"plain-1", b"committed-0", b"committed-1"]


def test_read_uncommitted_stops_at_the_high_watermark_with_the_open_transaction(
    bootstrap: str, open_transaction_topic: str
) -> None:
    source = make_source(
        bootstrap,
        topics=[open_transaction_topic],
        start="earliest",
        stop_at_end=True,
        isolation_level="read_uncommitted",
    )
    try:
        table = _drain_within(source, 60)
    finally:
        source.close()
    assert table is not None
    values = table.column("value").to_pylist()
    assert values[:4] == [b"plain-0", b"plain-1", b"committed-0", b"committed-1"]
    assert values[-2:] == [b"open-0", b"open-1"]


def test_isolation_level_is_a_source_option_not_a_consumer_setting() -> None:
    with pytest.raises(ValueError, match="isolation_level cannot be set here"):
        KafkaSourceOptions(
            bootstrap_servers="b:9092", topics=["t"], consumer={"isolation_level": "read_uncommitted"}
        )


def test_aborted_transactions_do_not_reach_a_bridge(
    kafka_broker: Any, bootstrap: str, aborted_transaction_topic: str
) -> None:
    if kafka_broker.kind == "tansu":
        pytest.skip("Tansu answers Fetch with no aborted transactions: no client can filter them there")
    source = make_source(bootstrap, topics=[aborted_transaction_topic], start="earliest", stop_at_end=True)
    try:
        table = _drain_within(source, 60)
    finally:
        source.close()
    assert table is not None
    assert table.column("value").to_pylist() == [b"plain-0", b"plain-1", b"committed-0", b"committed-1"]
