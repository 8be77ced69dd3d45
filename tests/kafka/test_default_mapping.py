"""A source's natural mapping is its default: what a pipeline without `[mapping]` writes, and says.

No broker is needed: these tests stop at the validated pipeline (and `shardline validate`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest
import shardline
from shardline import plugins
from shardline.config import build_pipeline

from .bridge import SHARDLINE

KAFKA = {"type": "kafka", "bootstrap_servers": "127.0.0.1:9092", "topics": ["orders"]}
SINK = {"stream": "http://127.0.0.1:8081/bigdata/orders"}


def _pipeline(mapping: dict[str, Any] | None = None, overrides: tuple[str, ...] = (), **source: Any) -> Any:
    doc: dict[str, Any] = {"source": {**KAFKA, **source}, "sink": dict(SINK)}
    if mapping is not None:
        doc["mapping"] = mapping
    return build_pipeline(doc, origin="bridge.toml", overrides=overrides)


def test_kafka_pipeline_without_mapping_keys_by_the_kafka_key_and_writes_the_value_as_is() -> None:
    config = _pipeline()
    assert config.mapping.partition_key == "key"
    assert config.mapping.data == "raw"
    assert config.mapping.data_column == "value"
    assert config.mapping_origin == "source default (kafka)"
    assert config.sink_kwargs()["partition_key"] == "key"


def test_a_mapping_table_replaces_the_source_default_as_a_whole() -> None:
    config = _pipeline({"data": "json"})
    assert config.mapping.data == "json"
    assert config.mapping.partition_key is None  # not merged with the default's key
    assert config.mapping_origin == "pipeline file"


def test_set_on_a_file_without_mapping_changes_one_key_of_the_source_default() -> None:
    config = _pipeline(overrides=("mapping.partitioner=modulo",))
    assert config.mapping.partitioner == "modulo"
    assert config.mapping.partition_key == "key"
    assert config.mapping.data == "raw"
    assert config.mapping_origin == "source default (kafka), with --set"


def test_json_values_default_to_json_data_keyed_by_the_kafka_key() -> None:
    config = _pipeline(value_format="json")
    assert (config.mapping.data, config.mapping.partition_key) == ("json", "key")


def test_without_the_key_column_the_default_has_no_partition_key() -> None:
    config = _pipeline(metadata_columns=["offset"])
    assert config.mapping.partition_key is None
    assert config.describe_mapping().endswith("no PartitionKey (round robin)")


def test_the_mapping_line_names_origin_and_fields() -> None:
    line = _pipeline().describe_mapping()
    assert line == "mapping: source default (kafka): partition_key=key, data=raw, data_column=value"


class _PollSource(shardline.Source):
    """A third-party source that declares its default mapping and its origin columns."""

    origin_columns: ClassVar[tuple[str, ...]] = ("url", "seq")

    @classmethod
    def default_mapping(cls, options: shardline.SourceOptions) -> dict[str, Any] | None:
        return {"partition_key": "device", "data": "template", "template": "{device}={reading}"}

    def batches(self) -> Iterator[tuple[pa.RecordBatch, Any]]:
        yield from ()

    def ack(self, token: Any) -> None:
        pass

    def checkpoint(self) -> dict[str, Any]:
        return {}


class _PlainSource(_PollSource):
    """A source that declares nothing."""

    origin_columns: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def default_mapping(cls, options: shardline.SourceOptions) -> dict[str, Any] | None:
        return shardline.Source.default_mapping(options)


class _PollPlugin:
    @shardline.hookimpl
    def shardline_register_sources(self, register: Any) -> None:
        register("poll-test", _PollSource)
        register("plain-test", _PlainSource)


@pytest.fixture
def poll_plugin() -> Iterator[None]:
    name = plugins.register_plugin(_PollPlugin(), "poll-test-plugin")
    try:
        yield
    finally:
        plugins.unregister_plugin(name)


def test_a_third_party_source_declares_its_default_mapping_and_origin(poll_plugin: None) -> None:
    config = build_pipeline({"source": {"type": "poll-test"}, "sink": dict(SINK)})
    assert config.mapping.partition_key == "device"
    assert config.mapping.template == "{device}={reading}"
    assert config.mapping_origin == "source default (poll-test)"
    assert config.sink_kwargs()["origin_columns"] == ["url", "seq"]


def test_a_source_without_a_default_gets_the_built_in_one(poll_plugin: None) -> None:
    config = build_pipeline({"source": {"type": "plain-test"}, "sink": dict(SINK)})
    assert (config.mapping.data, config.mapping.partition_key) == ("json", None)
    assert config.mapping_origin == "built-in default"
    assert config.sink_kwargs()["origin_columns"] is None


def _validate(tmp_path: Path, mapping: str = "") -> str:
    path = tmp_path / "bridge.toml"
    path.write_text(
        f"""
[source]
type = "kafka"
bootstrap_servers = "127.0.0.1:9092"
topics = ["orders"]

[sink]
stream = "http://127.0.0.1:8081/bigdata/orders"
{mapping}
"""
    )
    done = subprocess.run([SHARDLINE, "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_validate_says_the_mapping_is_the_source_default(tmp_path: Path) -> None:
    out = _validate(tmp_path)
    assert "mapping: source default (kafka): partition_key=key, data=raw, data_column=value" in out


def test_validate_says_the_mapping_comes_from_the_pipeline_file(tmp_path: Path) -> None:
    out = _validate(tmp_path, '[mapping]\ndata = "json"\npartition_key = "topic"')
    assert "mapping: pipeline file: partition_key=topic, data=json" in out
