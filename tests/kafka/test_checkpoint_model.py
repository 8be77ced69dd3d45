"""The Kafka source's checkpoint model: what a loaded checkpoint must look like (no broker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shardline.checkpoint import CheckpointStore
from shardline.errors import CheckpointError
from shardline_kafka import KafkaSource


def test_acknowledged_offsets_per_topic_partition_load(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "k.ckpt", "fp")
    state = {"group_id": "bridge", "offsets": {"orders:0": 120, "orders:1": 0}}
    store.save(state)
    assert store.load(KafkaSource) == state


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({}, "source.group_id: missing; source.offsets: missing"),
        ({"group_id": "b", "offsets": {"orders:0": -3}}, "source.offsets.orders:0: expected greater than"),
        ({"group_id": "bridge", "offsets": {"orders": 3}}, "keys must be 'topic:partition', got 'orders'"),
        ({"group_id": 5, "offsets": {}}, "source.group_id: expected a valid string, got 5"),
    ],
)
def test_a_damaged_kafka_checkpoint_is_refused(tmp_path: Path, state: dict[str, Any], problem: str) -> None:
    store = CheckpointStore(tmp_path / "k.ckpt", "fp")
    store.save(state)
    with pytest.raises(CheckpointError) as exc:
        store.load(KafkaSource)
    assert problem in str(exc.value)


def test_what_the_source_saves_is_what_its_model_accepts() -> None:
    source = KafkaSource(
        KafkaSource.Options.model_validate({"bootstrap_servers": "127.0.0.1:1", "topics": ["t"]})
    )
    state = source.checkpoint()
    assert KafkaSource.validate_checkpoint(state) == state == {"group_id": "shardline", "offsets": {}}
