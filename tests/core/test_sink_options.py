"""The Python API checks its options as strictly as a pipeline config does, with the same messages."""

from __future__ import annotations

import asyncio
import typing
import uuid
from typing import Any

import pytest
from shardline import AsyncStreamSink, ConfigError, StreamNotFoundError, StreamSink
from shardline.config import Ordering, build_pipeline
from shardline.engine import ORDERING_ALIASES, ORDERING_MODES


@pytest.fixture
def stream(stream_server_session: Any) -> str:
    """A stream URL on the session's real server that no other test uses (not created yet)."""
    return f"{stream_server_session.url}/bigdata/opts-{uuid.uuid4().hex[:8]}"


def _refused(stream: str, **options: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        StreamSink(stream, **options)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_misspelt_create_key_is_refused_and_no_stream_is_created(stream: str) -> None:
    message = _refused(stream, create={"shard": 4})
    assert message == (
        "StreamSink: create.shards: missing required key; "
        "StreamSink: create.shard: unknown key (expected one of: retention_hours, shards)"
    )
    with pytest.raises(StreamNotFoundError):
        StreamSink(stream)


def test_create_values_are_checked_like_the_config(stream: str) -> None:
    assert (
        _refused(stream, create={"shards": 0}) == "StreamSink: create.shards: expected an integer >= 1, got 0"
    )
    assert "create.retention_hours: expected an integer >= 1" in _refused(
        stream, create={"shards": 2, "retention_hours": -1}
    )
    assert _refused(stream, create=4).startswith("StreamSink: create: expected a dict like {'shards': 4")


def test_a_valid_create_makes_the_stream_it_names(stream: str) -> None:
    with StreamSink(stream, create={"shards": 4, "retention_hours": 2}) as sink:
        assert sink.shard_count == 4


def test_an_unknown_ordering_is_refused(stream: str) -> None:
    assert _refused(stream, ordering="strcit") == (
        "StreamSink: ordering: expected 'strict', 'paranoid' or 'none', got \"strcit\""
    )


def test_the_configs_ordering_modes_are_the_engines() -> None:
    assert set(typing.get_args(Ordering)) == set(ORDERING_MODES) | set(ORDERING_ALIASES)


def test_unknown_codec_and_partitioner_names_are_refused_before_connecting() -> None:
    message = _refused("http://127.0.0.1:1/bigdata/nowhere", data="jsn", partitioner="hsh")
    assert 'StreamSink: data: expected one of "arrow", "json", "raw", "template", got "jsn"' in message
    assert 'StreamSink: partitioner: expected one of "column", "hash"' in message
    assert 'got "hsh"' in message


def test_limits_are_checked_like_the_configs_sink_limits(stream: str) -> None:
    assert _refused(stream, max_in_flight_requests=0) == (
        "StreamSink: max_in_flight_requests: expected an integer >= 1, got 0"
    )
    assert _refused(stream, linger_ms=-1) == "StreamSink: linger_ms: expected a number >= 0, got -1"
    assert "StreamSink: retry_deadline_s: expected a number > 0" in _refused(stream, retry_deadline_s=0)


def test_an_option_the_transport_does_not_declare_is_refused(stream: str) -> None:
    assert _refused(stream, create={"shards": 1}, transport_options={"timout": 5}) == (
        "StreamSink: transport_options.timout: unknown key "
        "(expected one of: access_key, max_connections, timeout) (options of the http:// transport)"
    )
    assert "transport_options.timeout: expected a number > 0, got 0" in _refused(
        stream, transport_options={"timeout": 0}
    )


def test_a_bad_secret_transport_option_is_refused_without_echoing_it(stream: str) -> None:
    message = _refused(stream, transport_options={"access_key": 98765})
    assert message.startswith("StreamSink: transport_options.access_key: expected a string (value not shown)")
    assert "98765" not in message


def test_valid_transport_options_reach_the_transport(stream: str) -> None:
    with StreamSink(
        stream, create={"shards": 1}, transport_options={"timeout": 5, "max_connections": 2}
    ) as sink:
        assert sink.shard_count == 1
        client = sink._sink._core.transport.client  # type: ignore[attr-defined]
        assert (client._timeout.total, client._max_connections) == (5.0, 2)


def test_the_async_sink_names_itself_in_its_messages(stream: str) -> None:
    async def make() -> None:
        AsyncStreamSink(stream, create={"shard": 4})

    with pytest.raises(ConfigError, match=r"^AsyncStreamSink: create\.shards: missing required key"):
        asyncio.run(make())


def test_a_pipelines_transport_table_is_checked_against_the_transport(tmp_path: Any) -> None:
    doc = {
        "source": {"type": "parquet", "path": str(tmp_path)},
        "sink": {"stream": "local://store/bigdata/s", "transport": {"fsync": True, "fsnyc": True}},
    }
    with pytest.raises(ConfigError) as exc:
        build_pipeline(doc, origin="p.toml")
    assert "p.toml: sink.transport.fsnyc: unknown key (expected one of: access_key, fsync)" in str(exc.value)


def test_a_pipelines_ordering_is_checked_when_the_config_loads(tmp_path: Any) -> None:
    doc = {
        "source": {"type": "parquet", "path": str(tmp_path)},
        "sink": {"stream": "local://s/b/s", "ordering": "x"},
    }
    with pytest.raises(
        ConfigError, match=r"p\.toml: sink\.ordering: expected 'strict', 'paranoid' or 'none'"
    ):
        build_pipeline(doc, origin="p.toml")


def test_true_is_not_a_number_of_shards_or_requests(stream: str) -> None:
    assert (
        _refused(stream, create={"shards": True})
        == "StreamSink: create.shards: expected an integer >= 1, got true"
    )
    assert "max_in_flight_requests: expected an integer >= 1, got true" in _refused(
        stream, max_in_flight_requests=True
    )
    with pytest.raises(
        ConfigError, match=r"p\.toml: sink\.create\.shards: expected an integer >= 1, got true"
    ):
        build_pipeline(
            {
                "source": {"type": "parquet", "path": "."},
                "sink": {"stream": "local://s/b/s", "create": {"shards": True}},
            },
            origin="p.toml",
        )


def test_backoff_must_be_positive(stream: str) -> None:
    assert _refused(stream, backoff_base_s=-1) == "StreamSink: backoff_base_s: expected a number > 0, got -1"


def test_transport_options_must_be_a_dict(stream: str) -> None:
    assert _refused(stream, transport_options=[("timeout", 5)]) == (
        "StreamSink: transport_options: expected a dict of options, got a list"
    )


def test_a_size_string_for_the_byte_cap_is_read_as_the_config_reads_it(stream: str) -> None:
    with StreamSink(stream, create={"shards": 1}, max_in_flight_bytes="8MiB") as sink:  # type: ignore[arg-type]
        assert sink._sink._core.max_in_flight_bytes == 8 * 2**20  # type: ignore[attr-defined]


def test_column_options_are_checked_like_the_configs_mapping(stream: str) -> None:
    assert (
        _refused(stream, data="raw") == 'StreamSink: data "raw" needs data_column="<binary or string column>"'
    )
    assert (
        _refused(stream, partition_key=5) == "StreamSink: partition_key: expected a non-empty string, got 5"
    )
    assert _refused(stream, columns="abc") == (
        'StreamSink: columns: expected a non-empty list of column names, got "abc"'
    )
    assert "data_template: expected a non-empty string" in _refused(stream, data="template", data_template="")


def test_the_sink_options_are_declared_once_and_typed_for_keywords_alike() -> None:
    from shardline.sink_options import SinkKwargs, SinkOptions

    hints = typing.get_type_hints(SinkOptions)
    assert hints == typing.get_type_hints(SinkKwargs)  # same names, same types
    assert len(hints) > 20


def test_a_pipeline_configs_sink_keywords_are_sink_options() -> None:
    import dataclasses

    from shardline.sink_options import SinkOptions

    doc = {"source": {"type": "parquet", "path": "x.parquet"}, "sink": {"stream": "local:///tmp/s/c/s"}}
    kwargs = build_pipeline(doc).sink_kwargs()
    assert set(kwargs) <= {f.name for f in dataclasses.fields(SinkOptions)}
    assert SinkOptions().with_changes(kwargs).partitioner == "hash"


def test_options_as_one_object_and_keywords_on_top() -> None:
    from shardline import SinkOptions
    from shardline.faketransport import FakeTransport

    options = SinkOptions(partition_key="k", ordering="none", linger_ms=0.0)
    with StreamSink(FakeTransport(), options, ordering="strict") as sink:
        assert sink._sink._core.mapping.partition_key == "k"
        assert sink._sink._core.engine.options.ordering == "strict"
    with pytest.raises(TypeError, match=r"unknown sink option.*partiton_key"):
        StreamSink(FakeTransport(), partiton_key="k")  # type: ignore[call-arg]
