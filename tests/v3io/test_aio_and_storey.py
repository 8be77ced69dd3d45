"""The official async client (``//container/...`` paths) and storey's StreamTarget against the server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid

import aiohttp
import pytest
import v3io.aio.dataplane
import xxhash
from shardline_v3io.testing_server import RunningServer
from storey import Map, StreamTarget, SyncEmitSource, V3ioDriver, build_flow
from v3io.dataplane import RaiseForStatus

CONTAINER = "bigdata"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _shard_data(url: str, path: str) -> list[bytes]:
    """Read a shard the way storey's integration tests do: raw aiohttp, Seek then GetRecords."""
    async with aiohttp.ClientSession() as session:
        resp = await session.put(
            f"{url}/{path}",
            headers={"X-v3io-function": "Seek", "X-v3io-session-key": "k"},
            data=json.dumps({"Type": "EARLIEST"}),
        )
        if resp.status == 404:
            return []
        assert resp.status == 200, await resp.text()
        location = json.loads(await resp.text())["Location"]
        data = []
        while True:
            resp = await session.put(
                f"{url}/{path}",
                headers={"X-v3io-function": "GetRecords", "X-v3io-session-key": "k"},
                data=json.dumps({"Location": location}),
            )
            assert resp.status == 200, await resp.text()
            doc = json.loads(await resp.text())
            data.extend(base64.b64decode(r["Data"]) for r in doc["Records"])
            if doc["RecordsBehindLatest"] == 0:
                return data
            location = doc["NextLocation"]


def test_aio_client_stream_and_objects(stream_server_session: RunningServer) -> None:
    async def main() -> None:
        client = v3io.aio.dataplane.Client(endpoint=stream_server_session.url, access_key="k")
        path = _name("aio")
        try:
            await client.stream.create(container=CONTAINER, stream_path=path, shard_count=8)
            records = [
                {"shard_id": 1, "data": "first shard record #1"},
                {"shard_id": 1, "data": "first shard record #2", "client_info": bytearray(b"some info")},
                {"shard_id": 10, "data": "invalid shard record #1"},
                {"shard_id": 2, "data": "second shard record #1"},
                {"data": "some shard record #1"},
            ]
            resp = await client.stream.put_records(container=CONTAINER, stream_path=path, records=records)
            assert resp.output.failed_record_count == 1
            seek = await client.stream.seek(
                container=CONTAINER, stream_path=path, shard_id=1, seek_type="EARLIEST"
            )
            got = await client.stream.get_records(
                container=CONTAINER, stream_path=path, shard_id=1, location=seek.output.location
            )
            assert [r.data for r in got.output.records] == [
                b"first shard record #1",
                b"first shard record #2",
            ]
            assert got.output.records[1].client_info == b"some info"
            await client.stream.update(container=CONTAINER, stream_path=path, shard_count=16)
            for cg in range(3):
                await client.object.put(container=CONTAINER, path=os.path.join(path, f"cg{cg}-state.json"))
            await client.stream.delete(container=CONTAINER, stream_path=path)
            gone = await client.stream.describe(
                container=CONTAINER, stream_path=path, raise_for_status=RaiseForStatus.never
            )
            assert gone.status_code == 404

            obj = _name("aio-obj") + "/obj ect.txt"
            await client.object.put(container=CONTAINER, path=obj, body="1234567890")
            assert (
                await client.object.get(container=CONTAINER, path=obj, offset=4, num_bytes=3)
            ).body == b"567"
            head = await client.object.head(container=CONTAINER, path=obj)
            assert head.headers["Content-Length"] == "10"
            missing = await client.container.list(
                container=CONTAINER, path="/no-such-path", raise_for_status=RaiseForStatus.never
            )
            assert missing.status_code == 404 and "No such file" in str(missing.body)
            await client.container.list(CONTAINER, "/", raise_for_status=[200])
            with pytest.raises(Exception, match="404"):
                await client.object.get(container=CONTAINER, path="/non-existing")
        finally:
            await client.close()

    asyncio.run(main())


def test_storey_stream_target_writes_and_raw_reader_reads(stream_server_session: RunningServer) -> None:
    url = stream_server_session.url
    stream_path = f"{CONTAINER}/storey_ci/{_name('stream_test')}"
    controller = build_flow(
        [
            SyncEmitSource(),
            Map(lambda x: str(x)),
            StreamTarget(
                V3ioDriver(webapi=url, access_key="k"),
                stream_path,
                sharding_func=lambda event: int(event.body),
                batch_size=8,
                shards=2,
                full_event=False,
            ),
        ]
    ).run()
    for i in range(10):
        controller.emit(i)
    controller.terminate()
    controller.await_termination()
    assert asyncio.run(_shard_data(url, f"{stream_path}/0")) == [b"0", b"2", b"4", b"6", b"8"]
    assert asyncio.run(_shard_data(url, f"{stream_path}/1")) == [b"1", b"3", b"5", b"7", b"9"]


def test_storey_stream_target_with_key_field_and_reuse(stream_server_session: RunningServer) -> None:
    url = stream_server_session.url
    stream_path = f"{CONTAINER}/storey_ci/{_name('keyed')}"
    controller = build_flow(
        [
            SyncEmitSource(),
            StreamTarget(V3ioDriver(webapi=url, access_key="k"), stream_path, sharding_func="user", shards=3),
        ]
    ).run()
    users = ["ann", "ben", "cat", "dan"]
    for i in range(40):
        controller.emit({"user": users[i % 4], "n": i})
    controller.terminate()
    controller.await_termination()
    per_shard = {s: asyncio.run(_shard_data(url, f"{stream_path}/{s}")) for s in range(3)}
    assert sum(len(v) for v in per_shard.values()) == 40
    for shard, rows in per_shard.items():
        for raw in rows:
            event = json.loads(raw)
            assert xxhash.xxh32_intdigest(event["user"].encode()) % 3 == shard
        ns = [json.loads(r)["n"] for r in rows]
        assert ns == sorted(ns)
