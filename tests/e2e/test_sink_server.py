"""The sink against the real embedded stream server (``shardline serve`` in a subprocess).

Faults are injected by the server (``--fault-rate``/``--fault-shape``); order is checked by reading
the stream back and comparing each key's records by SequenceNumber.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from shardline import StreamSink
from shardline_v3io import wire as limits
from shardline_v3io.client import V3ioClient
from shardline_v3io.testing_server import start_server
from shardline_v3io.transport import V3ioTransport

FAST = {"backoff_base_s": 0.002, "backoff_max_s": 0.01, "linger_ms": 2.0}


@pytest.fixture(scope="module")
def faulty_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two servers failing 30% of records: one at random, one as shard tails (reads are not faulted)."""
    random_ = start_server(
        tmp_path_factory.mktemp("random"), fault_rate=0.3, fault_shape="random", fault_seed=42
    )
    tail = start_server(tmp_path_factory.mktemp("tail"), fault_rate=0.3, fault_shape="tail", fault_seed=42)
    try:
        yield {"random": random_, "tail": tail}
    finally:
        random_.stop()
        tail.stop()


def reread(server: Any, data_dir: Path, stream: str) -> tuple[Any, str]:
    """Stop a faulty server and start a clean one on the same data dir (faults hit reads too)."""
    server.stop()
    clean = start_server(data_dir)
    return clean, f"{clean.url}/bigdata/{stream}"


def keyed(start: int, n: int, keys: int) -> pa.RecordBatch:
    ids = list(range(start, start + n))
    return pa.record_batch({"k": [f"key-{i % keys}" for i in ids], "i": ids})


def read_stream(url: str) -> dict[int, list[Any]]:
    """Every record of a (small) stream, per shard, in sequence order."""
    base, container, path = url.rsplit("/", 2)

    async def main() -> dict[int, list[Any]]:
        async with V3ioClient(base) as client:
            info = await client.describe_stream(container, path)
            out: dict[int, list[Any]] = {}
            for shard in range(info.shard_count):
                location = await client.seek(container, path, shard, "EARLIEST")
                out[shard] = []
                while True:
                    got = await client.get_records(container, path, shard, location, 1000)
                    out[shard].extend(got.records)
                    location = got.next_location
                    if not got.records:
                        break
            return out

    return asyncio.run(main())


def records_by_key(url: str) -> dict[str, list[tuple[int, int, int]]]:
    """key -> [(shard, sequence number, i)] in stream order (shard by shard)."""
    out: dict[str, list[tuple[int, int, int]]] = collections.defaultdict(list)
    for shard, records in read_stream(url).items():
        seqs = [r.sequence_number for r in records]
        assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers step by one from 1"
        for r in records:
            doc = orjson.loads(r.data)
            assert r.partition_key == doc["k"]
            out[doc["k"]].append((shard, r.sequence_number, doc["i"]))
    return out


def assert_complete_and_ordered(url: str, n: int) -> dict[str, list[tuple[int, int, int]]]:
    by_key = records_by_key(url)
    everything = sorted(i for recs in by_key.values() for _, _, i in recs)
    assert everything == list(range(n)), "every record lands exactly once"
    for key, recs in by_key.items():
        shards = {s for s, _, _ in recs}
        assert len(shards) == 1, f"key {key} is in shards {shards}"
        in_seq_order = [i for _, _, i in sorted(recs)]
        assert in_seq_order == sorted(in_seq_order), f"key {key} out of order"
    return by_key


@pytest.mark.parametrize("shape", ["random", "tail"])
def test_hot_keys_stay_in_order_with_a_third_of_records_failing(
    faulty_servers: dict[str, Any], shape: str
) -> None:
    server = faulty_servers[shape]
    url = f"{server.url}/bigdata/hot"
    acked: list[int] = []
    with StreamSink(url, partition_key="k", create={"shards": 4}, **FAST) as sink:
        for b in range(3):
            sink.write(keyed(b * 300, 300, keys=8), ack=lambda b=b: acked.append(b))
        sink.flush()
        assert sink.metrics.retries > 0
        assert sink.metrics.order_violations == 0
        assert sink.metrics.dead_letters == 0
    assert acked == [0, 1, 2]
    assert_complete_and_ordered(url, 900)


def test_many_keys_all_land_in_order_under_faults_and_503s(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", fault_rate=0.3, fault_status_rate=0.1, fault_seed=7) as server:
        url = f"{server.url}/bigdata/many"
        with StreamSink(url, partition_key="k", create={"shards": 8}, **FAST) as sink:
            for b in range(4):
                sink.write(keyed(b * 2500, 2500, keys=1500))
            sink.flush()
            assert sink.metrics.failed_requests > 0
        server, url = reread(server, tmp_path / "data", "many")
        with server:
            assert_complete_and_ordered(url, 10_000)


def test_dead_letter_file_holds_exactly_the_bad_records(
    tmp_path: Path, faulty_servers: dict[str, Any]
) -> None:
    target = tmp_path / "dead.jsonl"
    n = 3000
    keys = [f"key-{i % 50}" for i in range(n)]
    bad = {17: "x" * 257, 1500: "y" * 300}  # keys over 256 bytes
    for row, key in bad.items():
        keys[row] = key
    payload = [orjson.dumps({"i": i}) for i in range(n)]
    payload[99] = b"z" * (limits.MAX_DATA_BYTES + 1)  # Data over 1 MiB
    batch = pa.record_batch({"p": payload, "k": keys})
    server = faulty_servers["random"]
    url = f"{server.url}/bigdata/dlq"
    with StreamSink(
        url, data="raw", data_column="p", partition_key="k", create={"shards": 4}, dead_letter=target, **FAST
    ) as sink:
        sink.write(batch)
        sink.flush()
        assert sink.metrics.dead_letters == 3
    stored = [orjson.loads(r.data)["i"] for recs in read_stream(url).values() for r in recs]
    assert sorted(stored) == sorted(set(range(n)) - {17, 99, 1500})
    dead = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    assert sorted(d["row"] for d in dead) == [17, 99, 1500]
    reasons = {d["row"]: d["reason"] for d in dead}
    assert "PartitionKey is 257 bytes" in reasons[17]
    assert "PartitionKey is 300 bytes" in reasons[1500]
    assert f"Data is {limits.MAX_DATA_BYTES + 1} bytes" in reasons[99]
    assert all(d["time"] and d["stream"] == url for d in dead)


def test_non_utf8_keys_and_rows_handed_to_dead_letter_reach_the_file(
    tmp_path: Path, stream_server_session: Any
) -> None:
    target = tmp_path / "dead.jsonl"
    url = f"{stream_server_session.url}/bigdata/dlq-bytes"
    batch = pa.record_batch({"k": [b"ann", b"\xff", b"bob"], "v": [b"1", b"2", b"3"]})
    with StreamSink(
        url, data="raw", data_column="v", partition_key="k", create={"shards": 2}, dead_letter=target
    ) as sink:
        sink.write(batch)
        sink.dead_letter([{"data": b"{nope", "row": 41, "error": "not JSON"}], "value is not a JSON object")
        sink.flush()
        assert sink.metrics.dead_letters == 2
    stored = sorted(r.data for recs in read_stream(url).values() for r in recs)
    assert stored == [b"1", b"3"]
    dead = {d["row"]: d for d in map(orjson.loads, target.read_bytes().splitlines())}
    assert dead[1]["reason"] == "partition key is not UTF-8 text" and dead[1]["data"] == "2"
    assert dead[41]["reason"] == "value is not a JSON object" and dead[41]["error"] == "not JSON"


class _RecordingTransport(V3ioTransport):
    """The real transport, checking on the way out that no request body exceeds the limit."""

    bodies: list[int]

    async def put_records_body(self, body: bytes, record_count: int) -> Any:
        assert len(body) <= limits.MAX_REQUEST_BODY_BYTES
        assert record_count <= limits.MAX_RECORDS_PER_REQUEST
        self.bodies.append(len(body))
        return await super().put_records_body(body, record_count)


def test_256_byte_keys_pass_and_257_byte_keys_are_dead_letters(stream_server_session: Any) -> None:
    url = f"{stream_server_session.url}/bigdata/key-edges"
    keys = ["k" * 256, "j" * 257, "é" * 128, "é" * 129]  # bytes, not characters, count
    with StreamSink(url, data="raw", data_column="p", partition_key="k", create={"shards": 2}) as sink:
        sink.write(pa.record_batch({"p": [b"a", b"b", b"c", b"d"], "k": keys}))
        sink.flush()
        assert sorted(d["partition_key"] for d in sink.dead_letters) == sorted(["j" * 257, "é" * 129])
    stored = {r.partition_key: r.data for recs in read_stream(url).values() for r in recs}
    assert stored == {"k" * 256: b"a", "é" * 128: b"c"}


def test_data_of_1_mib_passes_and_1_mib_plus_one_is_a_dead_letter(stream_server_session: Any) -> None:
    mib = limits.MAX_DATA_BYTES
    url = f"{stream_server_session.url}/bigdata/data-edges"
    payload = [b"a" * (mib - 1), b"b" * mib, b"c" * (mib + 1)] + [b"d" * 300_000] * 40
    keys = [f"key{i}" for i in range(43)]
    transport = _RecordingTransport(url)
    transport.bodies = []
    with StreamSink(
        transport,
        data="raw",
        data_column="p",
        partition_key="k",
        create={"shards": 1},
        retry_deadline_s=3,
        max_in_flight_bytes=64 * 2**20,  # room for full 10 MiB requests (the 16 MiB default holds less)
        **{**FAST, "linger_ms": 10_000.0},
    ) as sink:
        # the write is encoded in chunks; with a short linger the first request leaves with the
        # first chunk alone, and under load every later one may too. Here the records are all
        # queued first: the flush sends them at once, in requests packed up to the limit
        sink.write(pa.record_batch({"p": payload, "k": keys}))
        sink.flush(timeout=120)
        assert [d["reason"] for d in sink.dead_letters] == [
            f"Data is {mib + 1} bytes; the limit is {mib} bytes"
        ]
        assert sink.metrics.records == 42
    asyncio.run(transport.close())
    sizes = sorted(len(r.data) for recs in read_stream(url).values() for r in recs)
    assert sizes == [300_000] * 40 + [mib - 1, mib]
    assert max(transport.bodies) > 0.8 * limits.MAX_REQUEST_BODY_BYTES  # packed up to, never over, 10 MiB


@pytest.mark.slow
def test_growth_from_4_to_16_shards_while_writing_200k_keyed_rows(stream_server_session: Any) -> None:
    n, step, keys = 200_000, 10_000, 5_000
    server = stream_server_session
    url = f"{server.url}/bigdata/growing"
    grown = threading.Event()

    def grow() -> None:
        async def main() -> None:
            async with V3ioClient(server.url) as client:
                await client.update_stream("bigdata", "growing", 16)

        asyncio.run(main())
        grown.set()

    with StreamSink(url, partition_key="k", create={"shards": 4}, shard_refresh_s=0.2, **FAST) as sink:
        pos = 0
        deadline = time.monotonic() + 60
        while pos < n:
            if pos == n // 4:  # another task grows the stream while the sink writes
                threading.Thread(target=grow).start()
            size = step
            if pos >= 3 * n // 4 and sink.shard_count != 16:  # trickle until the sink notices the growth
                size = 100
                assert time.monotonic() < deadline, "the sink did not notice the growth"
            elif pos < 3 * n // 4:
                deadline = time.monotonic() + 60
            size = min(size, n - pos)  # after a trickle, a full step would overshoot n
            sink.write(keyed(pos, size, keys))
            pos += size
        assert grown.is_set()
        sink.flush()
        assert sink.metrics.shard_growths == 1
        assert sink.shard_count == 16
    by_key = records_by_key(url)
    everything = sorted(i for recs in by_key.values() for _, _, i in recs)
    assert everything == list(range(n)), "no loss, no duplicates"
    moved = 0
    for key, recs in by_key.items():
        shards = sorted({s for s, _, _ in recs})
        assert len(shards) <= 2, f"key {key} in shards {shards}"
        if len(shards) == 2:
            moved += 1
            old, new = shards
            assert old < 4 <= new, "a key moves only to a new shard"
            assert max(i for s, _, i in recs if s == old) < min(i for s, _, i in recs if s == new)
        for shard in shards:
            in_shard = [i for _, _, i in sorted(r for r in recs if r[0] == shard)]
            assert in_shard == sorted(in_shard), f"key {key} out of order in shard {shard}"
    assert moved > keys // 2  # jump hash moves 3/4 of the keys from 4 to 16 shards


def test_start_retries_503s_on_describe_and_create(tmp_path: Path) -> None:
    """With 60% of Describe/PutRecords answered 503, every sink still starts (creating its stream)."""
    with start_server(tmp_path / "data", fault_status=503, fault_status_rate=0.6, fault_seed=3) as server:
        for n in range(4):
            url = f"{server.url}/bigdata/start-{n}"
            with StreamSink(url, partition_key="k", create={"shards": 2}, **FAST) as sink:
                sink.write(keyed(0, 200, keys=20))
                sink.flush()
                assert sink.shard_count == 2
                assert sink.metrics.records == 200


def test_a_sink_that_cannot_start_closes_its_connection_pool(tmp_path: Path) -> None:
    """Every Describe answered 503 past start_timeout_s: start fails naming the 503, the pool is closed."""
    from shardline import AsyncStreamSink, StreamUnreachableError

    async def main(url: str) -> None:
        sink = AsyncStreamSink(url, partition_key="k", start_timeout_s=0.5, **FAST)
        with pytest.raises(StreamUnreachableError, match=r"cannot reach stream .*ServiceUnavailable"):
            await sink.start()
        client = sink._core.transport.client  # type: ignore[attr-defined]
        assert client._session is None or client._session.closed

    with start_server(tmp_path / "data", fault_status=503, fault_status_rate=1.0) as server:
        asyncio.run(main(f"{server.url}/bigdata/never"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(StreamUnreachableError):
                StreamSink(f"{server.url}/bigdata/never", start_timeout_s=0.5, **FAST)
            gc.collect()
        assert not [w for w in caught if "Unclosed client session" in str(w.message)]
