"""Acknowledged records survive SIGKILL of the server; restarts resume the sequence numbers."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from pathlib import Path

import aiohttp
import orjson
import pytest
from shardline_v3io.client import V3ioClient
from shardline_v3io.store import StreamStore
from shardline_v3io.store.stream import SHARDS_DIR
from shardline_v3io.testing_server import start_server

SHARDS = 4


async def _hammer(url: str, stop_after: int, kill: callable) -> dict[tuple[int, int], bytes]:  # type: ignore[valid-type]
    """Concurrent writers; kill the server once ``stop_after`` records are acknowledged."""
    acked: dict[tuple[int, int], bytes] = {}
    killed = asyncio.Event()
    headers = {"X-v3io-function": "PutRecords"}

    async def writer(w: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while not killed.is_set():
            datas = [f"w{w}-r{n + i}-".encode() + os.urandom(20) for i in range(50)]
            n += 50
            records = []
            for i, d in enumerate(datas):
                rec: dict[str, object] = {"Data": base64.b64encode(d).decode()}
                if i % 3 == 0:
                    rec["ShardId"] = (w + i) % SHARDS
                elif i % 3 == 1:
                    rec["PartitionKey"] = f"key-{(w * 7 + i) % 11}"
                records.append(rec)
            try:
                async with session.post(
                    f"{url}/bigdata/durable/", data=orjson.dumps({"Records": records}), headers=headers
                ) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                return
            for d, r in zip(datas, orjson.loads(body)["Records"], strict=True):
                assert "ErrorCode" not in r
                acked[(r["ShardId"], r["SequenceNumber"])] = d
            if len(acked) >= stop_after and not killed.is_set():
                killed.set()
                kill()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(writer(w, session) for w in range(6)))
    return acked


async def _read_all(url: str) -> dict[tuple[int, int], bytes]:
    client = V3ioClient(url)
    out: dict[tuple[int, int], bytes] = {}
    try:
        for shard in range(SHARDS):
            loc = await client.seek("bigdata", "durable", shard, "EARLIEST")
            while True:
                page = await client.get_records("bigdata", "durable", shard, loc, 1000)
                for rec in page.records:
                    out[(shard, rec.sequence_number)] = rec.data
                loc = page.next_location
                if page.records_behind_latest == 0:
                    break
    finally:
        await client.close()
    return out


@pytest.mark.slow
def test_sigkill_during_concurrent_puts_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        asyncio.run(_create(server.url))
        acked = asyncio.run(_hammer(server.url, 3000, server.kill))
    finally:
        server.kill()
    assert len(acked) >= 3000
    restarted = start_server(data_dir)
    try:
        stored = asyncio.run(_read_all(restarted.url))
        for key, data in acked.items():
            assert stored.get(key) == data, f"acknowledged record {key} lost or changed"
        for shard in range(SHARDS):
            seqs = sorted(s for (sh, s) in stored if sh == shard)
            assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers must stay dense from 1"
        # writes continue after the last surviving sequence number of each shard
        client_result = asyncio.run(_put_one(restarted.url, 2))
        assert client_result == max(s for (sh, s) in stored if sh == 2) + 1
    finally:
        assert restarted.stop() == 0


async def _create(url: str) -> None:
    client = V3ioClient(url)
    try:
        assert await client.create_stream("bigdata", "durable", SHARDS)
    finally:
        await client.close()


async def _put_one(url: str, shard: int) -> int:
    from shardline.transport import PutRecord

    client = V3ioClient(url)
    try:
        [res] = await client.put_records("bigdata", "durable", [PutRecord(b"after restart", shard_id=shard)])
        assert res.sequence_number is not None
        return res.sequence_number
    finally:
        await client.close()


def _active_files(data_dir: Path, shard: int) -> tuple[Path, Path]:
    d = data_dir / "bigdata" / "s" / SHARDS_DIR / str(shard)
    log = sorted(d.glob("*.log"))[-1]
    return log, log.with_suffix(".idx")


def _write_some(data_dir: Path, batches: int) -> list[tuple[int, bytes]]:
    store = StreamStore(data_dir)
    store.create_stream("bigdata", "s", 1, 24)
    stream = store.open_stream("bigdata", "s")
    written = []
    for b in range(batches):
        docs = [{"Data": f"b{b}-{i}".encode()} for i in range(10)]
        results, _ = stream.put_records(docs, encoded=False)
        written += [(r["SequenceNumber"], d["Data"]) for r, d in zip(results, docs, strict=True)]
    # simulate a crash: no close(), so no clean marker; just drop the descriptors
    for log in stream._shards.values():
        os.close(log.log_fd)
        os.close(log.idx_fd)
    os.close(store._lock_fd)
    return written


def _read_back(data_dir: Path) -> list[tuple[int, bytes]]:
    store = StreamStore(data_dir)
    stream = store.open_stream("bigdata", "s")
    loc = stream.seek(0, "EARLIEST")
    records, _next, _behind, _ms = stream.read(0, loc, 10_000)
    store.close()
    return [(seq, bytes(data)) for seq, _a, _k, _c, data in records]


def test_torn_tail_chunk_is_cut_and_index_rebuilt(tmp_path: Path) -> None:
    written = _write_some(tmp_path, 5)
    log, idx = _active_files(tmp_path, 0)
    # a torn write: half a chunk after the last complete one, and index entries missing
    with open(log, "ab") as f:
        f.write(struct.pack("<IIII", 0x53484C32, 5000, 0, 3) + b"\x00" * 100)
    with open(idx, "r+b") as f:
        f.truncate(8 * 37)
    assert _read_back(tmp_path) == written
    # the store appends after recovery with the next sequence number
    store = StreamStore(tmp_path)
    results, _ = store.open_stream("bigdata", "s").put_records([{"Data": b"next"}], encoded=False)
    store.close()
    assert results[0]["SequenceNumber"] == 51


def test_corrupted_last_chunk_is_dropped_not_served(tmp_path: Path) -> None:
    written = _write_some(tmp_path, 3)
    log, _idx = _active_files(tmp_path, 0)
    size = log.stat().st_size
    with open(log, "r+b") as f:  # flip a byte inside the last chunk: its checksum no longer matches
        f.seek(size - 3)
        f.write(b"\xff")
    assert _read_back(tmp_path) == written[:20]


def test_clean_restart_skips_the_scan_and_keeps_everything(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    store.create_stream("bigdata", "s", 1, 24)
    store.open_stream("bigdata", "s").put_records([{"Data": b"x"}] * 5, encoded=False)
    store.close()
    assert (tmp_path / "bigdata" / "s" / SHARDS_DIR / "0" / "clean.json").exists()
    assert [s for s, _ in _read_back(tmp_path)] == [1, 2, 3, 4, 5]


def test_open_shards_are_bounded_and_reopen_transparently(tmp_path: Path) -> None:
    store = StreamStore(tmp_path, max_open_shards=4)
    for name in ("a", "b"):
        store.create_stream("bigdata", name, 6, 24)
    expected: dict[tuple[str, int], list[bytes]] = {}
    for round_ in range(5):
        for name in ("a", "b"):
            stream = store.open_stream("bigdata", name)
            docs = [{"Data": f"{name}-{round_}-{s}".encode(), "ShardId": s} for s in range(6)]
            stream.put_records(docs, encoded=False)
            for s in range(6):
                expected.setdefault((name, s), []).append(f"{name}-{round_}-{s}".encode())
            assert len(store.open_shards) <= 4
    for (name, s), datas in expected.items():
        stream = store.open_stream("bigdata", name)
        records, *_ = stream.read(s, stream.seek(s, "EARLIEST"), 100)
        assert [bytes(r[4]) for r in records] == datas
        assert [r[0] for r in records] == [1, 2, 3, 4, 5]
    store.close()
