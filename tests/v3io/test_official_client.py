"""The official v3io client (v3io==0.7.2) drives the embedded server: what real users run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import v3io.dataplane
from shardline_v3io.testing_server import RunningServer

CONTAINER = "bigdata"


@pytest.fixture
def client(stream_server_session: RunningServer) -> Iterator[v3io.dataplane.Client]:
    """A sync official client bound to the session server."""
    c = v3io.dataplane.Client(
        endpoint=stream_server_session.url, access_key="any", transport_kind="httpclient"
    )
    try:
        yield c
    finally:
        c.close()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _read_shard(client: v3io.dataplane.Client, path: str, shard: int) -> list:
    location = client.stream.seek(
        container=CONTAINER, stream_path=path, shard_id=shard, seek_type="EARLIEST"
    ).output.location
    out = []
    while True:
        resp = client.stream.get_records(
            container=CONTAINER, stream_path=path, shard_id=shard, location=location, limit=100
        )
        out.extend(resp.output.records)
        location = resp.output.next_location
        if resp.output.records_behind_latest == 0:
            return out


def _exists(client: v3io.dataplane.Client, path: str) -> bool:
    resp = client.stream.describe(
        container=CONTAINER, stream_path=path, raise_for_status=v3io.dataplane.RaiseForStatus.never
    )
    return resp.status_code == 200


def test_put_with_shard_ids_failures_and_round_robin_like_v3io_py(client: v3io.dataplane.Client) -> None:
    path = _name("v3io-py-like")
    client.stream.create(container=CONTAINER, stream_path=path, shard_count=8)
    records = [
        {"shard_id": 1, "data": "first shard record #1"},
        {"shard_id": 1, "data": "first shard record #2", "client_info": bytearray(b"some info")},
        {"shard_id": 10, "data": "invalid shard record #1"},
        {"shard_id": 2, "data": "second shard record #1"},
        {"data": "some shard record #1"},
    ]
    resp = client.stream.put_records(container=CONTAINER, stream_path=path, records=records)
    assert resp.output.failed_record_count == 1
    errors = [r.error_code for r in resp.output.records]
    assert errors[2] is not None and errors[2] < 0
    assert [e is None for e in errors] == [True, True, False, True, True]
    assert resp.output.records[2].error_message == "ShardIDOutOfRangeException"
    assert [(r.shard_id, r.sequence_number) for r in resp.output.records if r.error_code is None] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (0, 1),
    ]
    got = _read_shard(client, path, 1)
    assert [r.data for r in got] == [b"first shard record #1", b"first shard record #2"]
    assert got[1].client_info == b"some info"
    assert got[0].client_info is None
    client.stream.update(container=CONTAINER, stream_path=path, shard_count=16)
    resp = client.stream.put_records(
        container=CONTAINER, stream_path=path, records=[{"shard_id": 10, "data": "ok"}]
    )
    assert resp.output.failed_record_count == 0
    assert client.stream.describe(container=CONTAINER, stream_path=path).output.shard_count == 16
    client.stream.delete(container=CONTAINER, stream_path=path)
    assert not _exists(client, path)


def test_delete_stream_with_consumer_group_objects(client: v3io.dataplane.Client) -> None:
    path = _name("with-cg")
    assert not _exists(client, path)
    client.stream.create(container=CONTAINER, stream_path=path, shard_count=8)
    for shard in range(8):
        client.stream.put_records(
            container=CONTAINER,
            stream_path=path,
            records=[{"shard_id": shard, "data": f"data for shard {shard}"}],
        )
    for cg in range(3):
        client.object.put(container=CONTAINER, path=os.path.join(path, f"cg{cg}-state.json"))
    assert _exists(client, path)
    listing = client.container.list(container=CONTAINER, path=path + "/").output
    keys = sorted(c.key for c in listing.contents)
    assert keys == sorted([f"{path}/{i}" for i in range(8)] + [f"{path}/cg{i}-state.json" for i in range(3)])
    client.stream.delete(container=CONTAINER, stream_path=path)
    assert not _exists(client, path)
    missing = client.container.list(
        container=CONTAINER, path=path + "/", raise_for_status=v3io.dataplane.RaiseForStatus.never
    )
    assert missing.status_code == 404
