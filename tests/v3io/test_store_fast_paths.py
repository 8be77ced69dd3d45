"""The store's vectorised PutRecords paths agree with the straightforward ones, byte for byte."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import orjson
import pytest
from shardline_v3io.store import StoreError, StreamStore
from shardline_v3io.store.shard import ShardLog, join_meta
from shardline_v3io.store.stream import _decode_each, _decode_joined

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n!é"


def _each_or_error(texts: list[str]) -> list[bytes] | str:
    try:
        return _decode_each(texts, "Data")[0]
    except StoreError:
        return "error"


def test_joined_base64_decode_accepts_only_what_the_per_record_decode_accepts() -> None:
    rng = random.Random(7)
    taken = 0
    for _ in range(5000):
        texts = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.5:
                texts.append(base64.b64encode(rng.randbytes(rng.randint(0, 12))).decode())
            else:
                texts.append("".join(rng.choice(_ALPHABET) for _ in range(rng.choice([0, 2, 4, 8, 12]))))
        fast = _decode_joined(texts)
        slow = _each_or_error(texts)
        if fast is not None:
            taken += 1
            assert slow != "error", texts
            assert fast[0] == slow, texts
            assert fast[1].tolist() == [len(b) for b in slow]
    assert taken > 1000  # the fast path is the common one


@pytest.mark.parametrize("bad", ["QQ==QUJD", "QUJD====", "QQ=A", "QUJ!", "QUJ", "QUJDé==="])
def test_bad_base64_is_refused_naming_the_record(tmp_path: Path, bad: str) -> None:
    store = StreamStore(tmp_path)
    store.create_stream("c", "s", 2, 24)
    stream = store.open_stream("c", "s")
    records = [{"Data": "QUJD", "ShardId": 0}, {"Data": bad, "ShardId": 1}]
    with pytest.raises(StoreError, match=r"Records\[1\]\.Data"):
        stream.put_records_response(records)
    store.close()


def test_response_bytes_equal_orjson_of_the_result_objects(tmp_path: Path) -> None:
    rng = random.Random(3)
    records = []
    for i in range(1000):
        rec: dict[str, object] = {"Data": base64.b64encode(rng.randbytes(rng.randint(0, 40))).decode()}
        if i % 3 == 0:
            rec["ShardId"] = i % 5
        elif i % 3 == 1:
            rec["PartitionKey"] = f"user-{i % 17}"
        if i % 7 == 0:
            rec["ClientInfo"] = base64.b64encode(rng.randbytes(8)).decode()
        records.append(rec)
    store_a = StreamStore(tmp_path / "a")
    store_b = StreamStore(tmp_path / "b")
    for store in (store_a, store_b):
        store.create_stream("c", "s", 5, 24)
    a = store_a.open_stream("c", "s")
    b = store_b.open_stream("c", "s")
    for _ in range(2):
        body = a.put_records_response(records)
        results, failed = b.put_records(records)
        assert failed == 0
        assert body == orjson.dumps({"FailedRecordCount": 0, "Records": results})
    # what was written reads back identically from both stores
    for shard in range(5):
        loc_a = a.seek(shard, "EARLIEST")
        loc_b = b.seek(shard, "EARLIEST")
        got_a = [r["Data"] for r in a.get_records_doc(shard, loc_a, 10000)["Records"]]
        got_b = [r["Data"] for r in b.get_records_doc(shard, loc_b, 10000)["Records"]]
        assert got_a == got_b and got_a
    # with a failed record the answer is the general one
    bad = [{"Data": "QUJD", "ShardId": 0}, {"Data": "QUJD", "ShardId": 99}]
    doc = orjson.loads(a.put_records_response(bad))
    assert doc["FailedRecordCount"] == 1
    assert doc["Records"][1]["ErrorMessage"] == "ShardIDOutOfRangeException"
    assert set(doc["Records"][0]) == {"SequenceNumber", "ShardId"}
    store_a.close()
    store_b.close()


def test_join_meta_interleaves_key_and_client_info() -> None:
    assert join_meta(None, None) == b""
    assert join_meta([b"k1", b"", b"k3"], None) == b"k1k3"
    assert join_meta(None, [b"c", b"", b""]) == b"c"
    assert join_meta([b"k", b"", b"kk"], [b"", b"c", b"cc"]) == b"kckkcc"


def test_data_only_requests_read_back_exactly_also_after_a_crash_scan(tmp_path: Path) -> None:
    rng = random.Random(11)
    datas = [rng.randbytes(rng.randint(0, 50)) for _ in range(600)]  # every padding length
    records = [{"Data": base64.b64encode(d).decode(), "ShardId": i % 4} for i, d in enumerate(datas)]
    records += [{"Data": base64.b64encode(d).decode()} for d in datas[:300]]  # round robin
    store = StreamStore(tmp_path)
    store.create_stream("c", "s", 4, 24)
    stream = store.open_stream("c", "s")
    doc = orjson.loads(stream.put_records_response(records))
    assert doc["FailedRecordCount"] == 0
    expected: dict[int, list[bytes]] = {s: [] for s in range(4)}
    for rec, res in zip(records, doc["Records"], strict=True):
        expected[res["ShardId"]].append(base64.b64decode(rec["Data"]))
    for s in range(4):
        stream.shard(s).flush_index()
    # reopen without a clean close: the recovery scan checks every chunk's checksum and lengths
    for s in range(4):
        log = stream.shard(s)
        fresh = ShardLog(log.directory)  # no clean.json: scans the active segment
        assert fresh.recovered_bytes == 0
        got = [r[4] for r in fresh.read(1, 10000)]
        assert got == expected[s]
        fresh.close()
    store.close()


def test_bad_base64_in_a_failing_record_still_fails_the_request_and_keeps_round_robin(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    store.create_stream("c", "s", 3, 24)
    stream = store.open_stream("c", "s")
    with pytest.raises(StoreError, match=r"Records\[1\]\.Data"):
        stream.put_records_response([{"Data": "QUJD"}, {"Data": "QUJ!", "ShardId": 7}])
    doc = orjson.loads(stream.put_records_response([{"Data": "QUJD"}, {"Data": "QUJD"}]))
    assert [r["ShardId"] for r in doc["Records"]] == [0, 1]  # nothing was consumed by the refused one
    assert [r["SequenceNumber"] for r in doc["Records"]] == [1, 1]
    store.close()


def _mixed_records(rng: random.Random, n: int, shards: int) -> list[dict[str, object]]:
    """Records with every combination of key (ASCII, non-ASCII, empty, absent), ClientInfo and ShardId."""
    keys = ["", "user-1", "ünïcødé-κλειδί", "x" * 256, None]
    records: list[dict[str, object]] = []
    for _ in range(n):
        rec: dict[str, object] = {"Data": rng.randbytes(rng.randint(0, 40))}
        key = rng.choice(keys)
        if key is not None:
            rec["PartitionKey"] = key + (str(rng.randint(0, 9)) if key and len(key) < 256 else "")
        if rng.random() < 0.5:
            rec["ShardId"] = rng.randrange(shards)
        if rng.random() < 0.3:
            rec["ClientInfo"] = rng.randbytes(rng.randint(0, 16))
        records.append(rec)
    return records


@pytest.mark.parametrize("encoded", [True, False])
def test_keys_client_info_and_data_read_back_exactly_in_every_mix(tmp_path: Path, encoded: bool) -> None:
    rng = random.Random(5 if encoded else 6)
    store = StreamStore(tmp_path)
    store.create_stream("c", "s", 4, 24)
    stream = store.open_stream("c", "s")
    expected: dict[int, list[tuple[bytes, bytes, bytes]]] = {s: [] for s in range(4)}
    for _ in range(5):
        records = _mixed_records(rng, 300, 4)
        sent = records
        if encoded:
            sent = [
                {k: base64.b64encode(v).decode() if k in ("Data", "ClientInfo") else v for k, v in r.items()}
                for r in records
            ]
        results, failed = stream.put_records(sent, encoded=encoded)
        assert failed == 0
        for rec, res in zip(records, results, strict=True):
            key = str(rec.get("PartitionKey") or "").encode()
            expected[res["ShardId"]].append((key, rec.get("ClientInfo", b""), rec["Data"]))  # type: ignore[arg-type]
    for s in range(4):
        got = [(r[2], r[3], r[4]) for r in stream.shard(s).read(1, 10000)]
        assert got == expected[s]
        # small byte budgets cut reads at record boundaries and lose nothing
        seq, pieces = 1, []
        while records_read := stream.shard(s).read(seq, 10000, max_bytes=300):
            pieces += [(r[2], r[3], r[4]) for r in records_read]
            seq = records_read[-1][0] + 1
        assert pieces == expected[s]
        stream.shard(s).flush_index()
        fresh = ShardLog(stream.shard(s).directory)  # the recovery scan accepts every chunk
        assert fresh.recovered_bytes == 0
        assert [(r[2], r[3], r[4]) for r in fresh.read(1, 10000)] == expected[s]
        fresh.close()
    store.close()


def test_a_segment_of_the_older_layout_is_refused_not_cut_off(tmp_path: Path) -> None:
    shard_dir = tmp_path / "shard"
    shard_dir.mkdir()
    old = (0x53484C32).to_bytes(4, "little") + bytes(60)  # an SHL2 chunk head and some body
    (shard_dir / "00000000000000000001.log").write_bytes(old)
    with pytest.raises(StoreError, match="older on-disk layout SHL2"):
        ShardLog(shard_dir)
    assert (shard_dir / "00000000000000000001.log").read_bytes() == old


def test_a_store_of_the_older_format_is_refused_at_open_and_left_as_it_was(tmp_path: Path) -> None:
    from shardline.errors import ConfigError
    from shardline_v3io.urls import STORE_MARKER

    old = tmp_path / "old"
    shards = old / "bigdata" / "events" / ".shardline-shards" / "0"
    shards.mkdir(parents=True)
    (shards / "00000000000000000001.log").write_bytes(b"SHL2-era bytes")
    (old / STORE_MARKER).write_bytes(b'{"format": 1, "kind": "shardline stream store"}')
    for _ in range(2):  # the second try is refused for the same reason: the lock was released
        with pytest.raises(ConfigError, match=r"store format 1.*reads format 2.*new --data-dir"):
            StreamStore(old)
    assert (shards / "00000000000000000001.log").read_bytes() == b"SHL2-era bytes"
    assert orjson.loads((old / STORE_MARKER).read_bytes())["format"] == 1
    # objects only: nothing to misread, so the store is re-stamped and opens
    plain = tmp_path / "plain"
    (plain / "bigdata").mkdir(parents=True)
    (plain / "bigdata" / "notes.txt").write_text("hello")
    (plain / STORE_MARKER).write_bytes(b'{"format": 1, "kind": "shardline stream store"}')
    store = StreamStore(plain)
    assert orjson.loads((plain / STORE_MARKER).read_bytes())["format"] == 2
    store.close()
    StreamStore(plain).close()  # the lock was released and the marker is current
