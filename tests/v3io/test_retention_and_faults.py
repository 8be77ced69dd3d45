"""Retention (old records are not served, old segments are deleted) and fault injection."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import requests
from shardline.partitioning import shard_for_key
from shardline_v3io.store import StreamStore
from shardline_v3io.store.errors import StoreError
from shardline_v3io.store.stream import SHARDS_DIR
from shardline_v3io.testing_server import RunningServer, start_server, start_server_thread

HOUR = 3600 * 10**9


class Clock:
    """A settable clock for the store."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


def test_records_past_retention_are_skipped_then_their_segments_deleted(tmp_path: Path) -> None:
    clock = Clock()
    store = StreamStore(tmp_path, segment_bytes=2000, clock=clock)
    store.create_stream("bigdata", "r", 1, 1)
    stream = store.open_stream("bigdata", "r")
    for i in range(10):  # old records, several segments (2 kB each)
        stream.put_records([{"Data": f"old-{i}-{j}".encode() * 5} for j in range(10)], encoded=False)
    old_location = stream.seek(0, "EARLIEST")
    clock.now += 2 * HOUR
    stream.put_records([{"Data": f"new-{j}".encode()} for j in range(3)], encoded=False)
    shard_dir = tmp_path / "bigdata" / "r" / SHARDS_DIR / "0"
    segments_before = len(list(shard_dir.glob("*.log")))
    assert segments_before > 2
    # before the sweep, expired records are skipped on read and by EARLIEST
    records, *_ = stream.read(0, old_location, 1000)
    assert [bytes(r[4]) for r in records] == [b"new-0", b"new-1", b"new-2"]
    records, *_ = stream.read(0, stream.seek(0, "EARLIEST"), 1000)
    assert [bytes(r[4]) for r in records] == [b"new-0", b"new-1", b"new-2"]
    assert stream.apply_retention() >= segments_before - 2
    assert len(list(shard_dir.glob("*.log"))) < segments_before
    with pytest.raises(StoreError) as err:
        stream.read(0, old_location, 10)
    assert err.value.kind.name == "IllegalLocationException"
    records, *_ = stream.read(0, stream.seek(0, "EARLIEST"), 1000)
    assert [r[0] for r in records] == [101, 102, 103]  # sequence numbers do not restart
    store.close()


def test_server_does_not_serve_records_older_than_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    server = start_server_thread(data)
    url = f"{server.url}/bigdata/ret/"
    try:
        assert (
            requests.post(
                url,
                headers={"X-v3io-function": "CreateStream"},
                json={"ShardCount": 1, "RetentionPeriodHours": 1},
            ).status_code
            == 204
        )
        body = {"Records": [{"Data": base64.b64encode(b"old").decode()}] * 5}
        assert requests.post(url, headers={"X-v3io-function": "PutRecords"}, json=body).status_code == 200
    finally:
        assert server.stop() == 0
    monkeypatch.setenv("SHARDLINE_CLOCK_OFFSET_S", str(2 * 3600))  # the server's clock: two hours later
    later = start_server_thread(data)
    url = f"{later.url}/bigdata/ret/"
    try:
        loc = requests.put(url + "0/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"}).json()
        got = requests.put(url + "0/", headers={"X-v3io-function": "GetRecords"}, json=loc).json()
        assert got["Records"] == [] and got["RecordsBehindLatest"] == 0
        seq = requests.put(
            url + "0/",
            headers={"X-v3io-function": "Seek"},
            json={"Type": "SEQUENCE", "StartingSequenceNumber": 1},
        ).json()
        got = requests.put(url + "0/", headers={"X-v3io-function": "GetRecords"}, json=seq).json()
        assert got["Records"] == []
    finally:
        later.stop()


def _put(url: str, records: list[dict[str, object]]) -> dict[str, object]:
    resp = requests.post(
        url, headers={"X-v3io-function": "PutRecords"}, data=orjson.dumps({"Records": records})
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def _create(server: RunningServer, shards: int) -> str:
    url = f"{server.url}/bigdata/faults-{uuid.uuid4().hex[:6]}/"
    assert (
        requests.post(
            url, headers={"X-v3io-function": "CreateStream"}, json={"ShardCount": shards}
        ).status_code
        == 204
    )
    return url


def _shard_data(url: str, shard: int) -> list[bytes]:
    loc = requests.put(
        f"{url}{shard}/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"}
    ).json()
    got = requests.put(f"{url}{shard}/", headers={"X-v3io-function": "GetRecords"}, json=loc).json()
    return [base64.b64decode(r["Data"]) for r in got["Records"]]


def test_random_record_faults_are_retryable_and_not_written(
    thread_server_factory: Callable[..., RunningServer],
) -> None:
    server = thread_server_factory(fault_rate=0.3, fault_shape="random", fault_seed=1)
    url = _create(server, 2)
    records = [{"Data": base64.b64encode(f"r{i}".encode()).decode(), "ShardId": i % 2} for i in range(1000)]
    doc = _put(url, records)
    results = doc["Records"]
    failed = [i for i, r in enumerate(results) if "ErrorCode" in r]
    assert doc["FailedRecordCount"] == len(failed)
    assert 200 < len(failed) < 400
    assert {results[i]["ErrorMessage"] for i in failed} == {"ResourceBusyException"}
    # failures are scattered (not a suffix) in random mode
    assert failed != list(range(failed[0], 1000))
    stored = set(_shard_data(url, 0)) | set(_shard_data(url, 1))
    assert stored == {f"r{i}".encode() for i in range(1000) if i not in failed}


def test_tail_faults_fail_a_suffix_of_each_shard(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "data", fault_rate=0.4, fault_shape="tail", fault_seed=3
    )  # the CLI options
    try:
        url = _create(server, 3)
        saw_partial = False
        for _ in range(10):
            records = [
                {"Data": base64.b64encode(b"x").decode(), "PartitionKey": f"k{i % 7}"} for i in range(300)
            ]
            results = _put(url, records)["Records"]
            for shard in range(3):
                outcome = [
                    "ErrorCode" in r for i, r in enumerate(results) if shard_for_key(f"k{i % 7}", 3) == shard
                ]
                assert all(
                    r["ShardId"] == shard_for_key(f"k{i % 7}", 3)
                    for i, r in enumerate(results)
                    if "ErrorCode" not in r
                )
                # once a record of this shard failed, every later record of the shard failed
                if True in outcome:
                    first = outcome.index(True)
                    assert all(outcome[first:])
                    saw_partial = saw_partial or first > 0
        assert saw_partial
    finally:
        server.stop()


def test_fault_status_answers_whole_requests(thread_server_factory: Callable[..., RunningServer]) -> None:
    server = thread_server_factory(fault_status=503, fault_status_rate=1.0)
    url = _create(server, 1)  # CreateStream is never failed
    resp = requests.post(url, headers={"X-v3io-function": "PutRecords"}, json={"Records": [{"Data": "AA=="}]})
    assert resp.status_code == 503
    assert resp.json()["ErrorMessage"] == "ServiceUnavailable"
    assert requests.get(f"{server.url}/bigdata?prefix=").status_code == 200
