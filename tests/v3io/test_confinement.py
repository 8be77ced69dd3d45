"""The server never reaches outside its data directory, nor from one stream into another.

Symbolic links in the data directory (to a file, to a directory, as a container) are never
followed: GET, PUT, DELETE, listings and stream functions through them are a 4xx and the files
outside are unchanged. A stream cannot be created inside or around another stream, and no delete
of a stream (DeleteStream, DELETE, the official client's list-then-delete) takes another with it.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import v3io.dataplane
from shardline_v3io.store.stream import META_FILE
from shardline_v3io.testing_server import RunningServer, start_server_thread


def _call(
    server: RunningServer, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _fn(server: RunningServer, function: str, path: str, doc: object = None) -> tuple[int, bytes]:
    body = orjson.dumps(doc) if doc is not None else b""
    return _call(server, "POST", path, body, {"X-v3io-function": function})


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with a hash of its content."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    """A server whose data dir holds links to a file and a directory outside it, and a linked container."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep.txt").write_text("deep")
    server = start_server_thread(tmp_path / "data")
    container = server.data_dir / "bigdata"
    container.mkdir(exist_ok=True)
    (container / "link-file").symlink_to(outside / "secret.txt")
    (container / "link-dir").symlink_to(outside)
    (server.data_dir / "evil").symlink_to(outside)
    yield server, outside
    server.stop()


SYMLINK_REQUESTS: dict[str, tuple[str, str, bytes, dict[str, str]]] = {
    "get linked file": ("GET", "/bigdata/link-file", b"", {}),
    "head linked file": ("HEAD", "/bigdata/link-file", b"", {}),
    "get through linked dir": ("GET", "/bigdata/link-dir/secret.txt", b"", {}),
    "get through linked container": ("GET", "/evil/secret.txt", b"", {}),
    "get deep through linked dir": ("GET", "/bigdata/link-dir/sub/deep.txt", b"", {}),
    "put over linked file": ("PUT", "/bigdata/link-file", b"overwritten", {}),
    "append to linked file": ("PUT", "/bigdata/link-file", b"appended", {"Range": "-1"}),
    "put through linked dir": ("PUT", "/bigdata/link-dir/new.txt", b"new", {}),
    "put over file through linked dir": ("PUT", "/bigdata/link-dir/secret.txt", b"overwritten", {}),
    "put through linked container": ("PUT", "/evil/new.txt", b"new", {}),
    "mkdir through linked dir": ("PUT", "/bigdata/link-dir/newdir/", b"", {}),
    "put deep through linked dir": ("PUT", "/bigdata/link-dir/a/b/c.txt", b"new", {}),
    "delete linked file": ("DELETE", "/bigdata/link-file", b"", {}),
    "delete through linked dir": ("DELETE", "/bigdata/link-dir/secret.txt", b"", {}),
    "delete dir through linked dir": ("DELETE", "/bigdata/link-dir/sub/", b"", {}),
    "delete linked dir": ("DELETE", "/bigdata/link-dir/", b"", {}),
    "delete through linked container": ("DELETE", "/evil/secret.txt", b"", {}),
    "list through linked dir": ("GET", "/bigdata?prefix=link-dir/", b"", {}),
    "list linked dir name": ("GET", "/bigdata?prefix=link-dir", b"", {}),
    "list linked container": ("GET", "/evil?prefix=", b"", {}),
    "list linked container sub": ("GET", "/evil?prefix=sub/", b"", {}),
    "create stream through linked dir": (
        "POST",
        "/bigdata/link-dir/s/",
        orjson.dumps({"ShardCount": 1}),
        {"X-v3io-function": "CreateStream"},
    ),
    "create stream in linked container": (
        "POST",
        "/evil/s/",
        orjson.dumps({"ShardCount": 1}),
        {"X-v3io-function": "CreateStream"},
    ),
    "create stream named by a link": (
        "POST",
        "/bigdata/link-dir/",
        orjson.dumps({"ShardCount": 1}),
        {"X-v3io-function": "CreateStream"},
    ),
    "describe through linked dir": (
        "PUT",
        "/bigdata/link-dir/s/",
        b"",
        {"X-v3io-function": "DescribeStream"},
    ),
}


@pytest.mark.parametrize("name", list(SYMLINK_REQUESTS))
def test_symlinks_in_the_data_dir_are_never_followed(linked: tuple[RunningServer, Path], name: str) -> None:
    server, outside = linked
    before = _snapshot(outside)
    method, path, body, headers = SYMLINK_REQUESTS[name]
    status, reply = _call(server, method, path, body, headers)
    assert 400 <= status < 500, reply
    assert b"secret" not in reply and b"deep" not in reply
    assert str(outside).encode() not in reply
    assert _snapshot(outside) == before
    assert (server.data_dir / "bigdata" / "link-file").is_symlink()  # the server did not touch the links


def test_listings_do_not_show_or_size_links(linked: tuple[RunningServer, Path]) -> None:
    server, _outside = linked
    assert _call(server, "PUT", "/bigdata/real.txt", b"real")[0] == 200
    status, reply = _call(server, "GET", "/bigdata?prefix=")
    assert status == 200
    assert b"real.txt" in reply and b"link-" not in reply
    status, reply = _call(server, "GET", "/")
    assert status == 200 and b"bigdata" in reply and b"evil" not in reply


# -- streams inside streams ------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    s = start_server_thread(tmp_path / "data")
    yield s
    s.stop()


def _put_records(server: RunningServer, path: str, *payloads: bytes) -> None:
    records = [{"Data": base64.b64encode(p).decode(), "ShardId": 0} for p in payloads]
    status, body = _fn(server, "PutRecords", path, {"Records": records})
    assert status == 200 and orjson.loads(body)["FailedRecordCount"] == 0, body


def _records(server: RunningServer, path: str) -> list[bytes]:
    status, body = _fn(server, "Seek", path + "0/", {"Type": "EARLIEST"})
    assert status == 200, body
    status, body = _fn(server, "GetRecords", path + "0/", orjson.loads(body))
    assert status == 200, body
    return [base64.b64decode(r["Data"]) for r in orjson.loads(body)["Records"]]


def test_a_stream_cannot_be_created_around_another(server: RunningServer) -> None:
    assert _fn(server, "CreateStream", "/bigdata/par/child/", {"ShardCount": 1})[0] == 204
    _put_records(server, "/bigdata/par/child/", b"acknowledged")
    for path, doc in [
        ("/bigdata/par/", {"ShardCount": 1}),
        ("/bigdata/", {"ShardCount": 1, "StreamName": "par"}),
    ]:
        status, body = _fn(server, "CreateStream", path, doc)
        assert status == 400, body
        assert orjson.loads(body)["ErrorMessage"] == "InvalidArgumentException"
    assert not (server.data_dir / "bigdata" / "par" / META_FILE).exists()
    assert _records(server, "/bigdata/par/child/") == [b"acknowledged"]


def test_a_stream_cannot_be_created_inside_another(server: RunningServer) -> None:
    assert _fn(server, "CreateStream", "/bigdata/outer/", {"ShardCount": 1})[0] == 204
    status, body = _fn(server, "CreateStream", "/bigdata/outer/inner/", {"ShardCount": 1})
    assert status == 400, body
    assert orjson.loads(body)["ErrorCode"] < 0


def _legacy_nested(server: RunningServer) -> None:
    """A stream holding another, as older versions allowed (made on disk)."""
    assert _fn(server, "CreateStream", "/bigdata/par/child/", {"ShardCount": 1})[0] == 204
    _put_records(server, "/bigdata/par/child/", b"acknowledged")
    child_meta = orjson.loads((server.data_dir / "bigdata/par/child" / META_FILE).read_bytes())
    child_meta["uid"] = "0" * len(child_meta["uid"])
    (server.data_dir / "bigdata/par" / META_FILE).write_bytes(orjson.dumps(child_meta))


def test_delete_stream_does_not_take_a_stream_inside_it(server: RunningServer) -> None:
    _legacy_nested(server)
    status, body = _fn(server, "DeleteStream", "/bigdata/par/")
    assert status == 409, body
    status, body = _call(server, "DELETE", "/bigdata/par/")
    assert status == 409, body
    assert b"par/child" in body
    assert _records(server, "/bigdata/par/child/") == [b"acknowledged"]


def test_the_official_clients_delete_does_not_take_a_stream_inside_it(server: RunningServer) -> None:
    _legacy_nested(server)
    client = v3io.dataplane.Client(endpoint=server.url, access_key="any", transport_kind="httpclient")
    try:
        with pytest.raises(Exception, match="409"):
            client.stream.delete(container="bigdata", stream_path="par")
    finally:
        client.close()
    assert _records(server, "/bigdata/par/child/") == [b"acknowledged"]
