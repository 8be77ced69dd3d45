"""Hostile input of every kind is a 4xx with a v3io error body: never a 500, never a server path.

Requests are sent with ``http.client`` so that paths reach the server exactly as written (no
client-side normalisation of ``..`` or percent-encoding).
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from shardline_v3io.testing_server import RunningServer, start_server_thread

STREAM = "/bigdata/hostile/"
OBJECT = "/bigdata/hostile-object"


@dataclass(frozen=True)
class Case:
    """One hostile request and the status it must get (any 4xx when ``status`` is None)."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    status: int | None = None


def _fn(function: str, path: str, doc: object = None, status: int | None = 400) -> Case:
    body = orjson.dumps(doc) if doc is not None else b""
    return Case("POST", path, {"X-v3io-function": function}, body, status)


def _seek(shard_segment: str) -> Case:
    return _fn("Seek", f"{STREAM}{shard_segment}/", {"Type": "EARLIEST"})


def _range(spec: str) -> Case:
    return Case("GET", OBJECT, {"Range": spec}, status=416)


def _put_records_named(name: str) -> Case:
    return _fn("PutRecords", "/bigdata/", {"StreamName": name, "Records": [{"Data": "AA=="}]}, status=None)


DEEP = "/bigdata/" + "a/" * 3000
LONG_SEGMENT = "/bigdata/" + "s" * 300
LONG_PATH = "/bigdata/" + "/".join(["p" * 200] * 6)

CASES: dict[str, Case] = {
    # numbers in paths: ASCII digits only, canonical
    "shard superscript two": _seek("%C2%B2"),
    "shard arabic-indic one": _seek("%D9%A1"),
    "shard fullwidth one": _seek("%EF%BC%91"),
    "shard circled one": _seek("%E2%91%A0"),
    "shard devanagari one": _seek("%E0%A5%A7"),
    "shard with underscore": _seek("1_0"),
    "shard with plus": _seek("+1"),
    "shard negative": _seek("-1"),
    "shard with space": _seek("%201"),
    "shard leading zero": _seek("01"),
    "shard exponent": _seek("1e3"),
    "shard hex": _seek("0x1"),
    "shard huge": _seek("9" * 30),
    "get records arabic-indic shard": _fn("GetRecords", f"{STREAM}%D9%A1/", {"Location": "x"}),
    # ranges
    "range double minus": _range("bytes=--1"),
    "range suffix zero": _range("bytes=-0"),
    "range suffix minus zero": _range("bytes=--0"),
    "range bare minus": _range("bytes=-"),
    "range empty": _range("bytes="),
    "range superscript": _range("bytes=\u00b2-"),
    "range underscore": _range("bytes=1_0-"),
    "range plus": _range("bytes=+1-2"),
    "range negative end": _range("bytes=0--1"),
    "range reversed": _range("bytes=3-1"),
    "range past end": _range("bytes=99-"),
    "range several": _range("bytes=0-1,2-3"),
    "range other unit": _range("items=0-1"),
    "range huge": _range("bytes=" + "9" * 40 + "-"),
    # depth and length
    "deep get": Case("GET", DEEP),
    "deep put": Case("PUT", DEEP + "x", body=b"x"),
    "deep delete": Case("DELETE", DEEP + "x"),
    "deep mkdir": Case("PUT", DEEP),
    "deep listing": Case("GET", "/bigdata?prefix=" + "a/" * 3000),
    "deep create stream": _fn("CreateStream", DEEP, {"ShardCount": 1}),
    "deep put records": _fn("PutRecords", DEEP, {"Records": [{"Data": "AA=="}]}),
    "long segment put": Case("PUT", LONG_SEGMENT, body=b"x"),
    "long segment get": Case("GET", LONG_SEGMENT),
    "long path put": Case("PUT", LONG_PATH, body=b"x"),
    "long path stream": _fn("CreateStream", LONG_PATH + "/", {"ShardCount": 1}),
    # names that XML (listings) or terminals cannot carry
    "name U+FFFE": Case("PUT", "/bigdata/%EF%BF%BE", body=b"x"),
    "name U+FFFF": Case("PUT", "/bigdata/a%EF%BF%BFb", body=b"x"),
    "name C1 control": Case("PUT", "/bigdata/a%C2%85b", body=b"x"),
    "name bell": Case("PUT", "/bigdata/a%07b", body=b"x"),
    "name DEL": Case("PUT", "/bigdata/a%7Fb", body=b"x"),
    "name encoded surrogate": Case("PUT", "/bigdata/a%ED%A0%80b", body=b"x"),
    "name invalid utf-8": Case("PUT", "/bigdata/a%FFb", body=b"x"),
    "name U+FFFE directory": Case("PUT", "/bigdata/%EF%BF%BE/"),
    "name U+FFFF stream": _fn("CreateStream", "/bigdata/%EF%BF%BF/", {"ShardCount": 1}),
    "name dot dot": Case("GET", "/bigdata/%2E%2E/x"),
    "name encoded slash": Case("GET", "/bigdata/a%2Fb"),
    "name reserved": Case("GET", "/bigdata/hostile/.shardline-stream.json"),
    "listing prefix U+FFFE": Case("GET", "/bigdata?prefix=%EF%BF%BE"),
    # StreamName: a stream path, checked like any path
    "stream name with query": _put_records_named("hostile?other"),
    "stream name with fragment": _put_records_named("hostile#other"),
    "stream name dot dot": _put_records_named("../hostile"),
    "stream name inner dot dot": _put_records_named("x/../hostile"),
    "stream name NUL": _put_records_named("host\x00ile"),
    "stream name U+FFFE": _put_records_named("host\ufffeile"),
    "stream name reserved": _put_records_named(".shardline-shards"),
    "stream name deep": _put_records_named("a/" * 100),
    "stream name not a string": _put_records_named(5),  # type: ignore[arg-type]
    # numbers in query strings
    "max-keys arabic-indic": Case("GET", "/bigdata?prefix=&max-keys=%D9%A1"),
    "max-keys underscore": Case("GET", "/bigdata?prefix=&max-keys=1_0"),
    "max-keys plus": Case("GET", "/bigdata?prefix=&max-keys=%2B5"),
    "max-keys negative": Case("GET", "/bigdata?prefix=&max-keys=-1"),
    "marker U+FFFF": Case("GET", "/bigdata?prefix=&marker=%EF%BF%BF"),
    "marker control character": Case("GET", "/bigdata?prefix=&marker=a%01"),
    "max-keys huge": Case("GET", "/bigdata?prefix=&max-keys=" + "9" * 40),
}


# HTTP that aiohttp itself refuses (parsed before any handler runs)
RAW_CASES: dict[str, bytes] = {
    "no host header": b"GET /bigdata/x HTTP/1.1\r\n\r\n",
    "garbage request line": b"\x16\x03\x01 hello\r\n\r\n",
    "bad http version": b"GET /bigdata/x HTTP/9.9\r\nHost: x\r\n\r\n",
    "bad content length": b"PUT /bigdata/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "unicode content length": b"PUT /bigdata/x HTTP/1.1\r\nHost: x\r\nContent-Length: \xd9\xa1\r\n\r\n",
    "request line too long": b"GET /bigdata/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header line too long": b"GET /bigdata/x HTTP/1.1\r\nHost: x\r\nX-a: " + b"a" * 20000 + b"\r\n\r\n",
    "too many headers": b"GET /bigdata/x HTTP/1.1\r\nHost: x\r\n" + b"X-a: b\r\n" * 300 + b"\r\n",
    "bad chunked body": b"PUT /bigdata/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    s = start_server_thread(tmp_path_factory.mktemp("hostile") / "data")
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.request("POST", STREAM, orjson.dumps({"ShardCount": 2}), {"X-v3io-function": "CreateStream"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 204
    conn.request("PUT", OBJECT, b"hello")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    conn.close()
    yield s
    s.stop()


def _send(server: RunningServer, case: Case) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(case.method, case.path, skip_accept_encoding=True)
        for name, value in case.headers.items():
            conn.putheader(name, value.encode("latin-1"))
        conn.putheader("Content-Length", str(len(case.body)))
        conn.endheaders(case.body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _good_request_answers(server: RunningServer) -> None:
    doc = {"Records": [{"Data": base64.b64encode(b"good").decode(), "ShardId": 0}]}
    status, body = _send(server, _fn("PutRecords", STREAM, doc))
    assert status == 200 and orjson.loads(body)["FailedRecordCount"] == 0


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_a_4xx_with_a_v3io_error_body_and_no_server_path(
    server: RunningServer, name: str
) -> None:
    case = CASES[name]
    status, body = _send(server, case)
    if case.status is not None:
        assert status == case.status, body
    assert 400 <= status < 500, body
    doc = orjson.loads(body)
    assert isinstance(doc["ErrorCode"], int) and doc["ErrorCode"] < 0
    assert isinstance(doc["ErrorMessage"], str) and doc["ErrorMessage"]
    assert str(server.data_dir.resolve()).encode() not in body
    assert str(server.data_dir.parent).encode() not in body
    _good_request_answers(server)


def test_good_ranges_still_work(server: RunningServer) -> None:
    for spec, want in [("bytes=0-1", b"he"), ("bytes=2", b"llo"), ("bytes=-2", b"lo"), ("bytes=1-", b"ello")]:
        status, body = _send(server, Case("GET", OBJECT, {"Range": spec}))
        assert (status, body) == (206, want)


def test_listings_stay_valid_xml_when_the_data_dir_holds_names_no_client_could_give(
    server: RunningServer,
) -> None:
    container = server.data_dir / "bigdata"
    (container / "bad\ufffename").write_bytes(b"x")
    (container / "bad\x85c1").write_bytes(b"x")
    os.close(os.open(os.fsencode(container) + b"/bad\xffbytes", os.O_CREAT | os.O_WRONLY, 0o644))
    for path in ("/bigdata?prefix=", "/bigdata?prefix=hostile", "/"):
        status, body = _send(server, Case("GET", path))
        assert status == 200, body
        root = ET.fromstring(body)  # raises on invalid XML
        assert root.tag in ("ListBucketResult", "ListAllMyBucketsResult")
        assert b"bad" not in body


def test_a_client_leaving_mid_body_is_one_log_line(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server = start_server_thread(tmp_path / "data")
    try:
        capfd.readouterr()
        for head in (
            f"POST {STREAM} HTTP/1.1\r\nHost: x\r\nX-v3io-function: PutRecords\r\n"
            "Content-Length: 100\r\n\r\n{",
            "PUT /bigdata/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
        ):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(head.encode())
        deadline = time.monotonic() + 10
        err = ""
        while err.count("gone mid-request") < 2 and time.monotonic() < deadline:
            err += capfd.readouterr().err
            time.sleep(0.05)  # polling the captured output, with a deadline
        assert err.count("gone mid-request") == 2, err
        assert "Traceback" not in err
        assert not (server.data_dir / "bigdata" / "upload").exists()
    finally:
        server.stop()


def _send_raw(server: RunningServer, data: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("name", list(RAW_CASES))
def test_malformed_http_is_a_4xx_with_a_v3io_error_body(server: RunningServer, name: str) -> None:
    status, body = _send_raw(server, RAW_CASES[name])
    assert 400 <= status < 500, body
    doc = orjson.loads(body)
    assert isinstance(doc["ErrorCode"], int) and doc["ErrorCode"] < 0
    assert str(server.data_dir.resolve()).encode() not in body
    _good_request_answers(server)
