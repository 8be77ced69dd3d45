"""Slow and stalled clients cannot stop the server from answering good ones.

Attacks use raw sockets on loopback only, bounded in count and time, and are closed afterwards.
Good requests come from a second loopback address (127.0.0.2, which Linux routes to ``lo``), since
the per-client cap counts connections per address.
"""

from __future__ import annotations

import base64
import http.client
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from shardline_v3io.testing_server import RunningServer, start_server, start_server_thread

GOOD_SOURCE = ("127.0.0.2", 0)


class GoodClient:
    """A keep-alive HTTP client whose connections come from 127.0.0.2."""

    def __init__(self, server: RunningServer, source: tuple[str, int] = GOOD_SOURCE) -> None:
        self.server = server
        self.source = source
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        port = self.server.port
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=self.source)

    def call(self, path: str, function: str, body: dict[str, object] | None = None) -> tuple[int, bytes]:
        """One stream call; returns (status, body). Reconnects once if the server closed the connection."""
        data = orjson.dumps(body) if body is not None else b""
        headers = {"X-v3io-function": function, "Content-Type": "application/json"}
        for attempt in range(2):
            try:
                self.conn.request("PUT" if function == "DescribeStream" else "POST", path, data, headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
                self.conn.close()
                self.conn = self._connect()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def _new_stream(client: GoodClient) -> str:
    path = f"/bigdata/slow-{uuid.uuid4().hex[:8]}/"
    status, body = client.call(path, "CreateStream", {"ShardCount": 2})
    assert status == 204, body
    return path


def _put_one(client: GoodClient, path: str) -> tuple[int, bytes]:
    record = {"Data": base64.b64encode(b"good").decode(), "ShardId": 0}
    return client.call(path, "PutRecords", {"Records": [record]})


def _stalled_body(port: int, path: str) -> socket.socket:
    """A PutRecords whose headers promise 100 bytes of body, of which one is sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-v3io-function: PutRecords\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
    )
    return sock


def _stalled_headers(port: int) -> socket.socket:
    """A request whose headers never end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"PUT /bigdata/x/ HTTP/1.1\r\nHost: x\r\nX-v3io-func")
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            return True
        if not data:
            return True
    return False


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A real server (subprocess) with short timeouts and a small per-client cap."""
    with start_server(tmp_path / "data", header_timeout=1, body_timeout=1, max_pending_per_client=40) as s:
        yield s


def test_stalled_bodies_take_no_processing_slot(small_server: RunningServer) -> None:
    good = GoodClient(small_server, source=("127.0.0.1", 0))
    path = _new_stream(good)
    stalled = [_stalled_body(small_server.port, path) for _ in range(36)]  # more than the 32 slots
    try:
        t0 = time.monotonic()
        status, body = _put_one(good, path)
        assert status == 200 and orjson.loads(body)["FailedRecordCount"] == 0
        assert time.monotonic() - t0 < 0.5
    finally:
        for s in stalled:
            s.close()
        good.close()


def test_a_stalled_body_is_answered_408_and_closed(small_server: RunningServer) -> None:
    sock = _stalled_body(small_server.port, "/bigdata/anything/")
    with sock:
        sock.settimeout(5)
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b'"ErrorMessage":"RequestTimeout"' in reply
        assert _closed_by_server(sock, within=5)


def test_stalled_headers_are_closed_after_the_header_timeout(small_server: RunningServer) -> None:
    sock = _stalled_headers(small_server.port)
    with sock:
        t0 = time.monotonic()
        assert _closed_by_server(sock, within=5)
        assert 0.5 < time.monotonic() - t0 < 4


def test_a_connection_over_the_per_client_cap_closes_the_oldest_stalled_one(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", max_pending_per_client=5) as server:
        stalled = [_stalled_headers(server.port) for _ in range(5)]
        try:
            newest = _stalled_headers(server.port)
            stalled.append(newest)
            assert _closed_by_server(stalled[0], within=2)  # the oldest made room
            assert not any(_closed_by_server(s, within=0.2) for s in stalled[1:])
            # a good request of the same address gets in (it closes the next oldest stalled one)
            same = GoodClient(server, source=("127.0.0.1", 0))
            assert same.call("/bigdata/none/", "DescribeStream")[0] == 404
            same.close()
            other = GoodClient(server)  # another address was never affected
            assert other.call("/bigdata/none/", "DescribeStream")[0] == 404
            other.close()
        finally:
            for s in stalled:
                s.close()


def test_bodies_beyond_the_reception_budget_get_a_503_at_once(tmp_path: Path) -> None:
    server = start_server_thread(tmp_path / "data", max_receiving_bytes=4000)
    try:
        good = GoodClient(server, source=("127.0.0.1", 0))
        path = _new_stream(good)
        hog = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        hog.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nX-v3io-function: PutRecords\r\n"
            "Content-Length: 9000\r\n\r\n".encode()
            + b"{"
            + b" " * 3999
        )
        deadline = time.monotonic() + 10
        while True:  # until the server holds the hog's 4000 bytes
            t0 = time.monotonic()
            status, body = _put_one(good, path)
            if status == 503 or time.monotonic() > deadline:
                break
        assert status == 503 and orjson.loads(body)["ErrorMessage"] == "ServiceUnavailable", body
        assert time.monotonic() - t0 < 0.5
        hog.close()
        deadline = time.monotonic() + 10
        while _put_one(good, path)[0] != 200:  # the budget is given back when the hog goes
            assert time.monotonic() < deadline
        good.close()
    finally:
        server.stop()


class Attack:
    """Keeps up to ``count`` stalled connections open from 127.0.0.1 (reopening closed ones)."""

    def __init__(self, port: int, path: str, count: int) -> None:
        self.port, self.path, self.count = port, path, count
        self.opened = 0
        self.max_open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        socks: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                socks = [s for s in socks if not _peer_closed(s)]
                while len(socks) < self.count and not self._stop.is_set():
                    try:
                        kind = self.opened % 3
                        if kind == 0:
                            s = _stalled_body(self.port, self.path)
                        elif kind == 1:
                            s = _stalled_headers(self.port)
                        else:
                            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                        s.setblocking(False)
                        socks.append(s)
                        self.opened += 1
                    except OSError:
                        break
                self.max_open = max(self.max_open, len(socks))
                self._stop.wait(0.5)
        finally:
            for s in socks:
                s.close()

    def __enter__(self) -> Attack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_500_stalled_connections_leave_good_requests_answering_within_100ms(tmp_path: Path) -> None:
    """500 stalled connections (slow headers, stalled PutRecords bodies, silent ones) from 127.0.0.1,
    reopened as the server closes them, for 10 s; meanwhile a keep-alive client from 127.0.0.2 and a
    client opening a new connection per request from 127.0.0.1 itself alternate DescribeStream and
    PutRecords, and every answer is timed."""
    with start_server(tmp_path / "data") as server:
        keep_alive = GoodClient(server)
        path = _new_stream(keep_alive)
        latencies: dict[str, list[float]] = {"other address": [], "same address": []}
        with Attack(server.port, path, count=500) as attack:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                for name in latencies:
                    for function in ("DescribeStream", "PutRecords"):
                        same = name == "same address"
                        client = GoodClient(server, ("127.0.0.1", 0)) if same else keep_alive
                        t0 = time.perf_counter()
                        if function == "PutRecords":
                            status, body = _put_one(client, path)
                        else:
                            status, body = client.call(path, function)
                        latencies[name].append(time.perf_counter() - t0)
                        assert status == 200, body
                        if client is not keep_alive:
                            client.close()
                time.sleep(0.02)  # pacing of the good clients, not a wait for readiness
        keep_alive.close()
        assert attack.opened >= 500 and attack.max_open >= 400
        for name, times in latencies.items():
            times.sort()
            p99 = times[int(len(times) * 0.99) - 1]
            print(
                f"{name}: {len(times)} good requests, median {statistics.median(times) * 1e3:.1f} ms, "
                f"p99 {p99 * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms; attack opened {attack.opened}"
            )
            assert p99 < 0.1, name
            assert times[-1] < 0.5, name
