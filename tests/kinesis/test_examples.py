"""The Kinesis examples: they validate, refuse what Kinesis cannot take, and the Parquet backfill
lands every row once, in per-key order, in kinesalite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline import ConfigError, load_pipeline, run_pipeline
from shardline_kinesis.streamtools import read_stream

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_kafka_example_validates_and_refuses_client_info(shardline_kinesis_env: None) -> None:
    config = load_pipeline(EXAMPLES / "kafka-to-kinesis.toml")
    assert config.sink.stream == "kinesis://orders"
    assert config.sink.transport["endpoint_url"] == "http://127.0.0.1:4567"
    with pytest.raises(ConfigError, match=r"mapping\.client_info: a kinesis:// stream has no client info"):
        load_pipeline(EXAMPLES / "kafka-to-kinesis.toml", ["mapping.client_info=topic"])
    with pytest.raises(ConfigError, match="regoin"):
        load_pipeline(EXAMPLES / "kafka-to-kinesis.toml", ["sink.transport.regoin=eu-west-1"])


def test_the_parquet_example_backfills_into_kinesalite(kinesalite: Any, tmp_path: Path) -> None:
    rows = 400
    table = pa.table(
        {
            "seq": list(range(rows)),
            "user_id": [f"u{i % 9}" for i in range(rows)],
            "kind": ["view"] * rows,
            "amount": [float(i) for i in range(rows)],
            "ts": list(range(rows)),
        }
    )
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "events.parquet")
    name = kinesalite.unique_name("example")
    summary = run_pipeline(
        EXAMPLES / "parquet-to-kinesis.toml",
        [
            f"source.path={tmp_path / 'in'}",
            f"sink.stream=kinesis://{name}",
            f"sink.transport.endpoint_url={kinesalite.endpoint_url}",
            f"sink.dead_letter={tmp_path / 'dead.jsonl'}",
            f"checkpoint.path={tmp_path / 'ckpt'}",
        ],
    )
    assert summary.exit_code == 0
    by_user: dict[str, list[int]] = {}
    for _, record in read_stream(kinesalite.client(), name):
        doc = json.loads(record["Data"])
        assert record["PartitionKey"] == doc["user_id"]
        by_user.setdefault(doc["user_id"], []).append(doc["seq"])
    assert sorted(s for seqs in by_user.values() for s in seqs) == list(range(rows))
    assert all(seqs == sorted(seqs) for seqs in by_user.values())
