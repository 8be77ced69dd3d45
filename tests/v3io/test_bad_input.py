"""Bad input gets the right status and a v3io error body; the server keeps answering afterwards."""

from __future__ import annotations

import base64
import random
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import requests
from shardline_v3io.testing_server import RunningServer

MB = 2**20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from shardline_v3io.testing_server import start_server_thread

    s = start_server_thread(tmp_path_factory.mktemp("bad-input"))
    yield s
    s.stop()


@pytest.fixture
def stream(server: RunningServer) -> str:
    """URL of a fresh 2-shard stream."""
    url = f"{server.url}/bigdata/bad-{uuid.uuid4().hex[:8]}/"
    r = requests.post(url, headers={"X-v3io-function": "CreateStream"}, json={"ShardCount": 2})
    assert r.status_code == 204
    return url


def _put(url: str, body: Any, raw: bytes | None = None) -> requests.Response:
    data = raw if raw is not None else orjson.dumps(body)
    return requests.post(url, headers={"X-v3io-function": "PutRecords"}, data=data)


def _assert_error(resp: requests.Response, status: int, name: str) -> None:
    assert resp.status_code == status, resp.text
    doc = resp.json()
    assert doc["ErrorMessage"] == name
    assert isinstance(doc["ErrorCode"], int) and doc["ErrorCode"] < 0
    assert resp.headers["Content-Type"].startswith("application/json")


def _still_works(url: str) -> None:
    resp = _put(url, {"Records": [{"Data": _b64(b"good"), "ShardId": 0}]})
    assert resp.status_code == 200 and resp.json()["FailedRecordCount"] == 0


def _raw_request(server: RunningServer, request_line: bytes, body: bytes = b"") -> int:
    host, port = "127.0.0.1", server.port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            request_line + b"\r\nHost: x\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        reply = sock.recv(65536)
    return int(reply.split(b" ", 2)[1])


WHOLE_REQUEST_CASES: list[tuple[str, Callable[[], Any]]] = [
    ("not json", lambda: b"{not json"),
    ("records not a list", lambda: {"Records": {"Data": "AA=="}}),
    ("no records", lambda: {"Records": []}),
    ("record not an object", lambda: {"Records": ["AA=="]}),
    ("data missing", lambda: {"Records": [{"PartitionKey": "k"}]}),
    ("data not a string", lambda: {"Records": [{"Data": 5}]}),
    ("bad base64", lambda: {"Records": [{"Data": "!!!notbase64"}]}),
    ("base64 with whitespace", lambda: {"Records": [{"Data": "YW Jj"}]}),
    ("bad client info base64", lambda: {"Records": [{"Data": "AA==", "ClientInfo": "%%"}]}),
    ("shard id a string", lambda: {"Records": [{"Data": "AA==", "ShardId": "1"}]}),
    ("shard id a bool", lambda: {"Records": [{"Data": "AA==", "ShardId": True}]}),
    ("shard id a float", lambda: {"Records": [{"Data": "AA==", "ShardId": 1.0}]}),
    ("key not a string", lambda: {"Records": [{"Data": "AA==", "PartitionKey": 5}]}),
    ("over 1000 records", lambda: {"Records": [{"Data": "AA=="}] * 1001}),
    ("body over 10 MB", lambda: {"Records": [{"Data": _b64(b"x" * (MB - 10))}] * 11}),
    ("json array body", lambda: [1, 2]),
]


@pytest.mark.parametrize("case", [c[0] for c in WHOLE_REQUEST_CASES])
def test_malformed_put_records_is_a_400_and_nothing_is_written(stream: str, case: str) -> None:
    body = dict(WHOLE_REQUEST_CASES)[case]()
    resp = _put(stream, None, raw=body) if isinstance(body, bytes) else _put(stream, body)
    _assert_error(resp, 400, "InvalidArgumentException")
    _still_works(stream)
    loc = requests.put(stream + "0/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"}).json()
    got = requests.put(stream + "0/", headers={"X-v3io-function": "GetRecords"}, json=loc).json()
    assert [base64.b64decode(r["Data"]) for r in got["Records"]] == [b"good"]


def test_exactly_1000_records_and_limits_at_the_edge_are_accepted(stream: str) -> None:
    resp = _put(stream, {"Records": [{"Data": "AA==", "ShardId": 1}] * 1000})
    assert resp.status_code == 200 and resp.json()["FailedRecordCount"] == 0
    edge = {"Data": _b64(b"x" * MB), "PartitionKey": "k" * 256, "ClientInfo": _b64(b"c" * 16)}
    resp = _put(stream, {"Records": [edge]})
    assert resp.json()["FailedRecordCount"] == 0


@pytest.mark.parametrize(
    ("record", "name", "detail"),
    [
        (
            {"Data": _b64(b"x" * (MB + 1))},
            "InvalidArgumentException",
            "Data is 1048577 bytes; the limit is 1048576",
        ),
        (
            {"Data": "AA==", "PartitionKey": "k" * 257},
            "InvalidArgumentException",
            "PartitionKey is 257 bytes (UTF-8); the limit is 256",
        ),
        (
            {"Data": "AA==", "PartitionKey": "é" * 129},
            "InvalidArgumentException",
            "PartitionKey is 258 bytes (UTF-8); the limit is 256",
        ),
        (
            {"Data": "AA==", "ClientInfo": _b64(b"c" * 17)},
            "InvalidArgumentException",
            "ClientInfo is 17 bytes; the limit is 16",
        ),
        (
            {"Data": "AA==", "ShardId": 2},
            "ShardIDOutOfRangeException",
            "ShardId 2 does not exist; the stream has 2 shards (0..1)",
        ),
        (
            {"Data": "AA==", "ShardId": -1},
            "ShardIDOutOfRangeException",
            "ShardId -1 does not exist; the stream has 2 shards (0..1)",
        ),
        (
            {"Data": "AA==", "ShardId": 2**63 + 5},
            "ShardIDOutOfRangeException",
            f"ShardId {2**63 + 5} does not exist; the stream has 2 shards (0..1)",
        ),
    ],
)
def test_per_record_problems_fail_only_that_record_and_say_why(
    stream: str, record: dict[str, Any], name: str, detail: str
) -> None:
    resp = _put(
        stream,
        {
            "Records": [
                {"Data": _b64(b"before"), "ShardId": 1},
                record,
                {"Data": _b64(b"after"), "ShardId": 1},
            ]
        },
    )
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["FailedRecordCount"] == 1
    ok1, bad, ok2 = doc["Records"]
    assert bad == {"ErrorCode": bad["ErrorCode"], "ErrorMessage": name, "ErrorDetail": detail}
    assert bad["ErrorCode"] < 0
    assert "ErrorCode" not in ok1 and "ErrorCode" not in ok2
    assert (ok1["ShardId"], ok2["ShardId"]) == (1, 1)
    assert ok2["SequenceNumber"] == ok1["SequenceNumber"] + 1


def test_bad_locations_are_illegal(stream: str, server: RunningServer) -> None:
    def get(shard: int, body: Any) -> requests.Response:
        return requests.put(f"{stream}{shard}/", headers={"X-v3io-function": "GetRecords"}, json=body)

    for bad in ("", "garbage", "A" * 24, 5, None):
        resp = get(0, {"Location": bad})
        if bad is None:
            _assert_error(resp, 400, "InvalidArgumentException")
        else:
            _assert_error(resp, 400, "IllegalLocationException")
    loc1 = requests.put(stream + "1/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"}).json()
    _assert_error(get(0, loc1), 400, "IllegalLocationException")  # another shard's location
    other = f"{server.url}/bigdata/other-{uuid.uuid4().hex[:6]}/"
    requests.post(other, headers={"X-v3io-function": "CreateStream"}, json={"ShardCount": 2})
    loc_other = requests.put(
        other + "0/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"}
    ).json()
    _assert_error(get(0, loc_other), 400, "IllegalLocationException")  # another stream's location
    _assert_error(get(0, {"Location": loc1["Location"], "Limit": 0}), 400, "InvalidArgumentException")
    _assert_error(get(5, loc1), 400, "ShardIDOutOfRangeException")
    _still_works(stream)


def test_bad_seek_requests(stream: str) -> None:
    def seek(body: Any) -> requests.Response:
        return requests.put(stream + "0/", headers={"X-v3io-function": "SeekShard"}, json=body)

    _assert_error(seek({"Type": "SIDEWAYS"}), 400, "InvalidArgumentException")
    _assert_error(seek({}), 400, "InvalidArgumentException")
    _assert_error(seek({"Type": "SEQUENCE"}), 400, "InvalidArgumentException")
    _assert_error(seek({"Type": "TIME", "TimestampSec": "now"}), 400, "InvalidArgumentException")
    resp = requests.put(stream + "x/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"})
    _assert_error(resp, 400, "InvalidArgumentException")


def test_unknown_function_kv_and_missing_stream(stream: str, server: RunningServer) -> None:
    _assert_error(
        requests.post(stream, headers={"X-v3io-function": "Explode"}, data=b"{}"),
        400,
        "UnsupportedOperationException",
    )
    _assert_error(
        requests.put(stream + "item", headers={"X-v3io-function": "PutItem"}, json={"Item": {}}),
        400,
        "UnsupportedOperationException",
    )
    missing = f"{server.url}/bigdata/nope-{uuid.uuid4().hex[:6]}/"
    _assert_error(
        requests.put(missing, headers={"X-v3io-function": "DescribeStream"}), 404, "ResourceNotFoundException"
    )
    _assert_error(_put(missing, {"Records": [{"Data": "AA=="}]}), 404, "ResourceNotFoundException")
    _assert_error(
        requests.post(stream, headers={"X-v3io-function": "CreateStream"}, json={"ShardCount": 0}),
        400,
        "InvalidArgumentException",
    )
    _assert_error(
        requests.post(stream, headers={"X-v3io-function": "UpdateStream"}, json={"ShardCount": 1}),
        400,
        "InvalidArgumentException",
    )
    _assert_error(
        requests.post(stream, headers={"X-v3io-function": "CreateStream"}, json={"ShardCount": 2}),
        409,
        "ResourceInUseException",
    )
    _still_works(stream)


@pytest.mark.parametrize(
    "path",
    [
        b"/bigdata/../etc/passwd",
        b"/bigdata/%2e%2e/x",
        b"/bigdata/a%2Fb/c",
        b"/bigdata/a%00b",
        b"/bigdata/a\\b",
        b"/bigdata/a%5cb",
        b"/bigdata/%ff%fe",
        b"/bigdata/./x",
        b"/bigdata/a%0ab",
    ],
)
def test_unsafe_paths_are_rejected(server: RunningServer, stream: str, path: bytes) -> None:
    status = _raw_request(server, b"GET " + path + b" HTTP/1.1")
    assert status == 400
    status = _raw_request(server, b"PUT " + path + b" HTTP/1.1", b"payload")
    assert status == 400
    assert not any(p.name == "passwd" for p in server.data_dir.rglob("passwd"))
    _still_works(stream)


def test_reserved_names_cannot_be_written(server: RunningServer, stream: str) -> None:
    resp = requests.put(stream + ".shardline-stream.json", data=b"{}")
    _assert_error(resp, 400, "InvalidArgumentException")
    resp = requests.put(stream + "0", data=b"shadowing a shard")
    _assert_error(resp, 400, "InvalidArgumentException")
    _still_works(stream)


def test_fuzzed_requests_never_crash_the_server(server: RunningServer, stream: str) -> None:
    rnd = random.Random(7)
    functions = [
        "PutRecords",
        "GetRecords",
        "Seek",
        "SeekShard",
        "CreateStream",
        "UpdateStream",
        "DescribeStream",
        "",
    ]
    for i in range(150):
        fn = rnd.choice(functions)
        shard = rnd.choice(["", "0/", "1/", "9/", "abc/"])
        kind = rnd.random()
        if kind < 0.3:
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 200)))
        elif kind < 0.6:
            body = orjson.dumps(
                {
                    rnd.choice(["Records", "Type", "Location", "ShardCount", "Limit"]): rnd.choice(
                        [None, 1, -1, "x", [], {}, [{}], [{"Data": None}], 2**64 - 1]
                    )
                }
            )
        else:
            body = orjson.dumps(
                {
                    "Records": [
                        {
                            "Data": rnd.choice(["AA==", "", "A", "====", None]),
                            "ShardId": rnd.choice([0, 1, -5, None, "1"]),
                            "PartitionKey": rnd.choice([None, "", "k", 3]),
                        }
                    ]
                }
            )
        headers = {"X-v3io-function": fn} if fn else {}
        resp = requests.request(
            rnd.choice(["PUT", "POST", "GET", "DELETE"]), stream + shard, headers=headers, data=body
        )
        assert resp.status_code < 500, (i, fn, shard, body, resp.status_code, resp.text)
    _still_works(stream)


def test_access_key_is_required_when_configured(thread_server_factory: Callable[..., RunningServer]) -> None:
    server = thread_server_factory(access_key="s3cret")
    url = f"{server.url}/bigdata/auth/"
    create = {"X-v3io-function": "CreateStream"}
    _assert_error(requests.post(url, headers=create, json={"ShardCount": 1}), 403, "Permission denied")
    _assert_error(
        requests.post(url, headers={**create, "X-v3io-session-key": "wrong"}, json={"ShardCount": 1}),
        403,
        "Permission denied",
    )
    _assert_error(
        requests.get(f"{server.url}/bigdata?prefix=auth/", auth=("user", "wrong")), 403, "Permission denied"
    )
    assert (
        requests.post(
            url, headers={**create, "X-v3io-session-key": "s3cret"}, json={"ShardCount": 1}
        ).status_code
        == 204
    )
    resp = requests.put(url, headers={"X-v3io-function": "DescribeStream"}, auth=("anyone", "s3cret"))
    assert resp.status_code == 200 and resp.json()["ShardCount"] == 1
