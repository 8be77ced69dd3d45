"""The official v3io client (v3io==0.7.2, sync) drives the embedded server: what v3io users run."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import v3io.dataplane
from shardline.partitioning import shard_for_key
from shardline_v3io.testing_server import RunningServer
from v3io.dataplane import RaiseForStatus

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


def _read_from(client: v3io.dataplane.Client, path: str, shard: int, location: str) -> list:
    out = []
    while True:
        resp = client.stream.get_records(
            container=CONTAINER, stream_path=path, shard_id=shard, location=location, limit=7
        )
        out.extend(resp.output.records)
        location = resp.output.next_location
        if resp.output.records_behind_latest == 0:
            return out


def _read_shard(client: v3io.dataplane.Client, path: str, shard: int) -> list:
    seek = client.stream.seek(container=CONTAINER, stream_path=path, shard_id=shard, seek_type="EARLIEST")
    return _read_from(client, path, shard, seek.output.location)


def _exists(client: v3io.dataplane.Client, path: str) -> bool:
    resp = client.stream.describe(
        container=CONTAINER, stream_path=path, raise_for_status=RaiseForStatus.never
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
    assert [e is None for e in errors] == [True, True, False, True, True]
    assert errors[2] < 0
    assert resp.output.records[2].error_message == "ShardIDOutOfRangeException"
    placed = [(r.shard_id, r.sequence_number) for r in resp.output.records if r.error_code is None]
    assert placed == [(1, 1), (1, 2), (2, 1), (0, 1)]
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
            container=CONTAINER, stream_path=path, records=[{"shard_id": shard, "data": f"for shard {shard}"}]
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
        container=CONTAINER, path=path + "/", raise_for_status=RaiseForStatus.never
    )
    assert missing.status_code == 404
    assert b"No such file" in missing.body


def test_create_twice_is_409_and_describe_reports_retention(client: v3io.dataplane.Client) -> None:
    path = _name("twice")
    client.stream.create(container=CONTAINER, stream_path=path, shard_count=3, retention_period_hours=5)
    again = client.stream.create(
        container=CONTAINER, stream_path=path, shard_count=3, raise_for_status=RaiseForStatus.never
    )
    assert again.status_code == 409
    out = client.stream.describe(container=CONTAINER, stream_path=path).output
    assert (out.shard_count, out.retention_period_hours) == (3, 5)


def test_partition_keys_keep_their_shard_and_data_round_trips_byte_for_byte(
    client: v3io.dataplane.Client,
) -> None:
    path = _name("keys")
    client.stream.create(container=CONTAINER, stream_path=path, shard_count=5)
    payloads = [bytes([i % 256]) * (i % 37) + os.urandom(i % 11) for i in range(200)]
    keys = [f"user-{i % 13}" for i in range(200)]
    records = [{"data": p, "partition_key": k} for p, k in zip(payloads, keys, strict=True)]
    resp = client.stream.put_records(container=CONTAINER, stream_path=path, records=records)
    assert resp.output.failed_record_count == 0
    for r, k in zip(resp.output.records, keys, strict=True):
        assert r.shard_id == shard_for_key(k, 5)
    got = {shard: _read_shard(client, path, shard) for shard in range(5)}
    by_shard_expected: dict[int, list[tuple[bytes, str]]] = {}
    for p, k in zip(payloads, keys, strict=True):
        by_shard_expected.setdefault(shard_for_key(k, 5), []).append((p, k))
    for shard in range(5):
        assert [(r.data, r.partition_key) for r in got[shard]] == by_shard_expected.get(shard, [])
        assert [r.sequence_number for r in got[shard]] == list(range(1, len(got[shard]) + 1))


def test_round_robin_without_key_or_shard_id_starts_at_shard_zero(client: v3io.dataplane.Client) -> None:
    path = _name("rr")
    client.stream.create(container=CONTAINER, stream_path=path, shard_count=3)
    resp = client.stream.put_records(
        container=CONTAINER, stream_path=path, records=[{"data": f"r{i}"} for i in range(7)]
    )
    assert [r.shard_id for r in resp.output.records] == [0, 1, 2, 0, 1, 2, 0]
    resp = client.stream.put_records(container=CONTAINER, stream_path=path, records=[{"data": "next"}])
    assert resp.output.records[0].shard_id == 1


def test_seek_earliest_latest_sequence_and_time(client: v3io.dataplane.Client) -> None:
    path = _name("seek")
    client.stream.create(container=CONTAINER, stream_path=path, shard_count=1)
    first = [{"shard_id": 0, "data": f"early-{i}"} for i in range(5)]
    client.stream.put_records(container=CONTAINER, stream_path=path, records=first)
    time.sleep(0.05)  # arrival times must differ for the TIME seek below (not a readiness wait)
    boundary = time.time()
    time.sleep(0.05)
    late = [{"shard_id": 0, "data": f"late-{i}"} for i in range(3)]
    client.stream.put_records(container=CONTAINER, stream_path=path, records=late)

    def seek(**kw: object) -> str:
        return client.stream.seek(container=CONTAINER, stream_path=path, shard_id=0, **kw).output.location

    assert [r.data for r in _read_from(client, path, 0, seek(seek_type="EARLIEST"))][:2] == [
        b"early-0",
        b"early-1",
    ]
    assert _read_from(client, path, 0, seek(seek_type="LATEST")) == []
    by_seq = _read_from(client, path, 0, seek(seek_type="SEQUENCE", starting_sequence_number=4))
    assert [r.sequence_number for r in by_seq] == [4, 5, 6, 7, 8]
    sec = int(boundary)
    nsec = int((boundary - sec) * 1e9)
    by_time = _read_from(client, path, 0, seek(seek_type="TIME", timestamp_sec=sec, timestamp_nsec=nsec))
    assert [r.data for r in by_time] == [b"late-0", b"late-1", b"late-2"]
    future = _read_from(
        client, path, 0, seek(seek_type="TIME", timestamp_sec=int(time.time()) + 3600, timestamp_nsec=0)
    )
    assert future == []
    # LATEST then new records: the location sees them
    latest = seek(seek_type="LATEST")
    client.stream.put_records(
        container=CONTAINER, stream_path=path, records=[{"shard_id": 0, "data": "after"}]
    )
    assert [r.data for r in _read_from(client, path, 0, latest)] == [b"after"]
    bad = client.stream.seek(
        container=CONTAINER,
        stream_path=path,
        shard_id=0,
        seek_type="SEQUENCE",
        starting_sequence_number=99,
        raise_for_status=RaiseForStatus.never,
    )
    assert bad.status_code == 400


def test_get_records_until_caught_up_in_pages(client: v3io.dataplane.Client) -> None:
    path = _name("pages")
    client.stream.create(container=CONTAINER, stream_path=path, shard_count=2)
    for batch in range(3):
        client.stream.put_records(
            container=CONTAINER,
            stream_path=path,
            records=[{"shard_id": 1, "data": f"{batch}-{i}"} for i in range(400)],
        )
    location = client.stream.seek(
        container=CONTAINER, stream_path=path, shard_id=1, seek_type="EARLIEST"
    ).output.location
    resp = client.stream.get_records(
        container=CONTAINER, stream_path=path, shard_id=1, location=location, limit=500
    )
    assert len(resp.output.records) == 500
    assert resp.output.records_behind_latest == 700
    rest = _read_from(client, path, 1, resp.output.next_location)
    assert len(rest) == 700
    assert rest[-1].data == b"2-399" and rest[-1].sequence_number == 1200
    empty = client.stream.seek(
        container=CONTAINER, stream_path=path, shard_id=0, seek_type="EARLIEST"
    ).output.location
    resp = client.stream.get_records(container=CONTAINER, stream_path=path, shard_id=0, location=empty)
    assert resp.output.records == [] and resp.output.records_behind_latest == 0


def test_objects_put_get_range_head_append_delete(client: v3io.dataplane.Client) -> None:
    d = _name("objects")
    path = d + "/obj ect.txt"
    missing = client.object.get(container=CONTAINER, path=path, raise_for_status=RaiseForStatus.never)
    assert missing.status_code == 404
    client.object.put(container=CONTAINER, path=path, body="1234567890")
    assert client.object.get(container=CONTAINER, path=path).body == b"1234567890"
    assert client.object.get(container=CONTAINER, path=path, offset=4).body == b"567890"
    assert client.object.get(container=CONTAINER, path=path, offset=4, num_bytes=3).body == b"567"
    assert client.object.get(container=CONTAINER, path=path, offset=0, num_bytes=2).body == b"12"
    head = client.object.head(container=CONTAINER, path=path)
    assert ("Content-Length", "10") in head.headers.items()
    assert ("Content-Length", "0") in client.object.head(container=CONTAINER, path=d).headers.items()
    for part in ("First", " Second", " Third"):
        client.object.put(container=CONTAINER, path=d + "/appended", body=part, append=True)
    assert client.object.get(container=CONTAINER, path=d + "/appended").body == b"First Second Third"
    client.object.delete(container=CONTAINER, path=path)
    assert (
        client.object.get(container=CONTAINER, path=path, raise_for_status=RaiseForStatus.never).status_code
        == 404
    )


def test_container_listing_files_dirs_and_missing_prefix(client: v3io.dataplane.Client) -> None:
    d = _name("listing")
    for i in range(5):
        client.object.put(container=CONTAINER, path=f"{d}/object-{i}.txt", body="x" * i)
    for i in range(4):
        client.object.put(container=CONTAINER, path=f"{d}/dir-{i}/")
    dirs = client.container.list(
        container=CONTAINER, path=d, get_all_attributes=True, directories_only=True
    ).output
    assert (len(dirs.contents), len(dirs.common_prefixes)) == (0, 4)
    everything = client.container.list(container=CONTAINER, path=d, get_all_attributes=True).output
    assert sorted(c.key for c in everything.contents) == [f"{d}/object-{i}.txt" for i in range(5)]
    assert sorted(c.size for c in everything.contents) == [0, 1, 2, 3, 4]
    assert sorted(p.prefix for p in everything.common_prefixes) == [f"{d}/dir-{i}/" for i in range(4)]
    page = client.container.list(container=CONTAINER, path=d, limit=3).output
    assert page.is_truncated == "true" and len(page.contents) + len(page.common_prefixes) == 3
    nxt = client.container.list(container=CONTAINER, path=d, limit=100, marker=page.next_marker).output
    assert len(nxt.contents) + len(nxt.common_prefixes) == 6
    for c in everything.contents:
        client.object.delete(container=CONTAINER, path=c.key)
    for p in everything.common_prefixes:
        client.object.delete(container=CONTAINER, path=p.prefix)
    missing = client.container.list(
        container=CONTAINER, path="/no-such-path", raise_for_status=RaiseForStatus.never
    )
    assert missing.status_code == 404 and b"No such file" in missing.body
    assert client.container.list(container=CONTAINER, path="/", raise_for_status=[200]).status_code == 200


def test_batch_object_puts_and_gets(client: v3io.dataplane.Client) -> None:
    d = _name("batch")
    for i in range(16):
        client.batch.object.put(CONTAINER, f"{d}/object{i}", body=f"object-{i}")
    assert all(r.status_code == 200 for r in client.batch.wait())
    for i in range(16):
        client.batch.object.get(CONTAINER, f"{d}/object{i}")
    responses = client.batch.wait()
    assert [r.body.decode() for r in responses] == [f"object-{i}" for i in range(16)]


def test_stream_name_in_the_body_and_get_items_listing(stream_server_session: RunningServer) -> None:
    import requests

    base = f"{stream_server_session.url}/bigdata/"
    name = _name("named")
    resp = requests.post(
        base, headers={"X-v3io-function": "CreateStream"}, json={"StreamName": name, "ShardCount": 2}
    )
    assert resp.status_code == 204
    put = requests.post(
        base,
        headers={"X-v3io-function": "PutRecords"},
        json={"StreamName": name, "Records": [{"Data": "AA=="}]},
    )
    assert put.status_code == 200 and put.json()["Records"] == [{"SequenceNumber": 1, "ShardId": 0}]
    desc = requests.put(base + name + "/", headers={"X-v3io-function": "DescribeStream"})
    assert desc.json() == {"ShardCount": 2, "RetentionPeriodHours": 24}
    items = requests.put(
        base + name + "/", headers={"X-v3io-function": "GetItems"}, json={"AttributesToGet": "__name"}
    )
    assert items.status_code == 200
    assert sorted(i["__name"]["S"] for i in items.json()["Items"]) == ["0", "1"]
    missing = requests.put(base + name + "-x/", headers={"X-v3io-function": "GetItems"}, json={})
    assert missing.status_code == 404
