"""The Kafka source feeding shardline.StreamSink in-process, into the real embedded server."""

from __future__ import annotations

import collections

import pytest
from shardline import StreamSink

from .bridge import read_stream
from .helpers import committed, make_source, new_group, produce

pytestmark = pytest.mark.kafka


def test_source_into_stream_sink_keeps_bytes_keys_and_commits_after_the_sinks_acks(
    bootstrap, make_topic, producer, stream_server
):
    topic = make_topic(4)
    messages = [(b"user-%d" % (i % 13), b"\x00payload-%d\xff" % i) for i in range(5000)]
    produce(producer, topic, messages)
    group = new_group()
    source = make_source(bootstrap, topics=[topic], group_id=group, stop_at_end=True, max_batch_records=700)
    acked = []
    sink = StreamSink(
        f"{stream_server.url}/bigdata/bridged",
        partition_key="key",
        data="raw",
        data_column="value",
        create={"shards": 3},
    )
    try:
        source.set_flush(sink.flush)
        for batch, token in source.batches():
            sink.write(batch, ack=lambda token=token: (source.ack(token), acked.append(token)))
        sink.flush()
    finally:
        sink.close()
        source.close()
    assert acked
    stream = read_stream(stream_server.url)
    got = [(key.encode(), data) for records in stream.values() for data, key in records]
    assert collections.Counter(got) == collections.Counter(messages)
    # per key, the order of the topic (all of a key's messages sit in one Kafka partition)
    for records in stream.values():
        by_key = collections.defaultdict(list)
        for data, key in records:
            by_key[key].append(int(data[len(b"\x00payload-") : -1]))
        assert all(seq == sorted(seq) for seq in by_key.values())
    assert sum(committed(bootstrap, group, topic).values()) == 5000
