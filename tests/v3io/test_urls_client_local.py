"""Stream URLs, the async V3ioClient's error mapping, and local:// (the store in-process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from shardline.errors import AccessDeniedError, ConfigError, StreamNotFoundError, TransportError
from shardline.plugins import lookup
from shardline.transport import PutRecord
from shardline_v3io.client import V3ioClient
from shardline_v3io.local import LocalTransport, release_store
from shardline_v3io.store import StreamStore
from shardline_v3io.testing_server import RunningServer
from shardline_v3io.urls import parse_stream_url


def test_http_url() -> None:
    u = parse_stream_url("http://127.0.0.1:8081/bigdata/dir/stream/")
    assert (u.scheme, u.endpoint, u.container, u.path) == (
        "http",
        "http://127.0.0.1:8081",
        "bigdata",
        "dir/stream",
    )
    assert parse_stream_url("https://h/c/s", access_key="k").access_key == "k"
    assert parse_stream_url("http://:pw@h:1/c/s").access_key == "pw"


def test_v3io_url_uses_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V3IO_API", "webapi:8081")
    monkeypatch.setenv("V3IO_ACCESS_KEY", "key")
    u = parse_stream_url("v3io:///bigdata/s")
    assert (u.endpoint, u.container, u.path, u.access_key) == ("http://webapi:8081", "bigdata", "s", "key")
    monkeypatch.delenv("V3IO_API")
    with pytest.raises(ConfigError, match="V3IO_API"):
        parse_stream_url("v3io:///bigdata/s")


def test_local_url_split_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    u = parse_stream_url("local://data/bigdata/s")
    assert (u.local_dir, u.container, u.path) == ("data", "bigdata", "s")
    StreamStore(tmp_path / "data").close()  # now "data" is a store directory
    u = parse_stream_url("local://data/bigdata/dir/s")
    assert (u.local_dir, u.container, u.path) == ("data", "bigdata", "dir/s")
    u = parse_stream_url(f"local://{tmp_path}/data/bigdata/dir/s")
    assert (u.local_dir, u.container, u.path) == (f"{tmp_path}/data", "bigdata", "dir/s")


@pytest.mark.parametrize(
    "bad", ["nope", "ftp://h/c/s", "http://h:1/c", "http://h:1/c/../s", "local://c/s", "http://h:99999/c/s"]
)
def test_bad_urls_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_stream_url(bad)


def test_client_maps_statuses_to_errors(stream_server_session: RunningServer) -> None:
    async def main() -> None:
        client = V3ioClient(stream_server_session.url)
        try:
            with pytest.raises(StreamNotFoundError):
                await client.describe_stream("bigdata", "no-such-stream")
            assert await client.create_stream("bigdata", "client-errors", 2) is True
            assert await client.create_stream("bigdata", "client-errors", 2) is False
            with pytest.raises(TransportError) as err:
                await client.update_stream("bigdata", "client-errors", 1)
            assert err.value.retryable is False and "InvalidArgumentException" in str(err.value)
            results = await client.put_records(
                "bigdata", "client-errors", [PutRecord(b"a", shard_id=1), PutRecord(b"b", shard_id=7)]
            )
            assert results[0].ok and results[0].sequence_number == 1
            assert not results[1].ok and results[1].error_message == "ShardIDOutOfRangeException"
            assert await client.delete_stream("bigdata", "client-errors") is True
            assert await client.delete_stream("bigdata", "client-errors") is False
        finally:
            await client.close()
        dead = V3ioClient("http://127.0.0.1:9", timeout=5)
        try:
            with pytest.raises(TransportError) as err:
                await dead.describe_stream("bigdata", "x")
            assert err.value.retryable is True
        finally:
            await dead.close()

    asyncio.run(main())


def test_client_access_denied(thread_server_factory) -> None:  # type: ignore[no-untyped-def]
    server = thread_server_factory(access_key="right")

    async def main() -> None:
        client = V3ioClient(server.url, "wrong")
        try:
            with pytest.raises(AccessDeniedError):
                await client.describe_stream("bigdata", "x")
        finally:
            await client.close()

    asyncio.run(main())


def test_local_transport_is_registered_and_writes(tmp_path: Path) -> None:
    factory = lookup("transports", "local")
    url = f"local://{tmp_path}/d/bigdata/s"
    transport = factory(url)
    assert isinstance(transport, LocalTransport)

    async def main() -> None:
        assert await transport.create(3, 24) is True
        assert await transport.create(3, 24) is False
        info = await transport.describe()
        assert (info.shard_count, info.retention_hours) == (3, 24)
        results = await transport.put_records(
            [PutRecord(b"x", partition_key="k"), PutRecord(b"y", shard_id=9), PutRecord(b"z" * (2**20 + 1))]
        )
        assert results[0].ok and not results[1].ok and not results[2].ok
        await transport.update(4)
        assert (await transport.describe()).shard_count == 4
        with pytest.raises(StreamNotFoundError):
            await factory(f"local://{tmp_path}/d/bigdata/missing").describe()

    asyncio.run(main())
    with pytest.raises(ConfigError, match="in use by another process"):
        StreamStore(tmp_path / "d")  # the shared store of this process holds the lock
    release_store(tmp_path / "d")
    StreamStore(tmp_path / "d").close()


def test_local_transport_put_records_body_reports_only_failures(tmp_path: Path) -> None:
    from shardline.errors import TransportError
    from shardline.transport import BodyTransport

    url = f"local://{tmp_path}/d/bigdata/body"
    transport = LocalTransport(url)
    assert isinstance(transport, BodyTransport)  # the engine takes the pre-encoded fast path

    async def main() -> None:
        await transport.create(2, 24)
        body = (
            b'{"Records":[{"Data":"eA==","PartitionKey":"k","ShardId":1},'
            b'{"Data":"eQ==","ShardId":5},{"Data":"eg=="}]}'
        )
        result = await transport.put_records_body(body, 3)
        assert result.record_count == 3
        assert [(f.index, f.error_message) for f in result.failures] == [(1, "ShardIDOutOfRangeException")]
        stream = transport.store.open_stream("bigdata", "body")
        got = stream.get_records_doc(1, stream.seek(1, "EARLIEST"), 10)["Records"]
        assert [(r["Data"], r.get("PartitionKey")) for r in got] == [("eA==", "k")]
        with pytest.raises(TransportError, match="base64") as info:
            await transport.put_records_body(b'{"Records":[{"Data":"e!=="}]}', 1)
        assert not info.value.retryable
        with pytest.raises(TransportError, match="malformed"):
            await transport.put_records_body(b'{"Records":[', 1)

    asyncio.run(main())
    release_store(tmp_path / "d")
