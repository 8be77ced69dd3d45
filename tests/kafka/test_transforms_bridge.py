"""A Kafka bridge through [[transform]] steps (SQL, filter, rename): a real broker, the real server, and
the same query by DuckDB over the produced rows gives exactly what reaches the stream."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from kafka import KafkaProducer
from shardline.pipeline import run_pipeline
from shardline_v3io.testing import read_stream

from .helpers import new_group

pytestmark = [pytest.mark.kafka]

COUNT = 3_000
KINDS = ("view", "click", "cart", "purchase")


def test_bridge_through_sql_filter_and_rename_gives_what_duckdb_gives(
    make_topic: Callable[..., str],
    producer: KafkaProducer,
    bootstrap: str,
    stream_server_session: Any,
    tmp_path: Path,
) -> None:
    topic = make_topic(partitions=3)
    rows = [
        {
            "user_id": f"user-{i % 17}",
            "seq": i,
            "kind": KINDS[(i * 7) % 4],
            "amount": round((i % 97) * 1.25, 2),
        }
        for i in range(COUNT)
    ]
    for row in rows:
        producer.send(topic, key=row["user_id"].encode(), value=json.dumps(row).encode())
    producer.flush()
    stream = f"{stream_server_session.url}/bigdata/transform-bridge-{topic}"
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[source]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "{new_group()}"
value_format = "json"
stop_at_end = true

[sink]
stream = "{stream}"
create = {{ shards = 4 }}

[mapping]
partition_key = "user"

[[transform]]
sql = "SELECT user_id, seq, amount * 100 AS cents FROM batch WHERE kind IN ('purchase', 'cart')"
[[transform]]
filter = "cents >= 5000"
[[transform]]
rename = {{ user_id = "user", seq = "n" }}
"""
    )
    summary = run_pipeline(config)

    produced = pa.Table.from_pylist(rows)  # noqa: F841 - DuckDB reads it by name
    expected = duckdb.sql(
        "SELECT user_id, seq, amount * 100 AS cents FROM produced "
        "WHERE kind IN ('purchase', 'cart') AND amount * 100 >= 5000"
    ).fetchall()
    records = [
        (shard, json.loads(r.data), r.partition_key) for shard, rs in read_stream(stream).items() for r in rs
    ]
    assert sorted((row["user"], row["n"], row["cents"]) for _s, row, _k in records) == sorted(expected)
    assert {tuple(row) for _s, row, _k in records} == {("user", "n", "cents")}
    per_key: dict[str, list[int]] = defaultdict(list)
    for _shard, row, key in records:
        assert key == row["user"]
        per_key[key].append(row["n"])
    for seqs in per_key.values():  # each key in source order (a duplicate may follow: at-least-once)
        firsts = list(dict.fromkeys(seqs))
        assert firsts == sorted(firsts)
    assert summary.rows_acked == COUNT
    assert summary.filtered == COUNT - len(expected)
