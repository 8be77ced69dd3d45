"""``shardline serve --fault-*`` against the real server over HTTP: rates, latency, resets, bad values.

Rates are checked against the binomial law: a measured failed fraction must lie within
``BOUND_SIGMAS`` standard deviations (``sqrt(F (1 - F) / records)``) of the stated rate. Seeds make
each run the same; the bounds are what would hold for any seed.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import requests
from click.testing import CliRunner
from shardline.errors import ConfigError, TransportError
from shardline_v3io.__main__ import main
from shardline_v3io.client import V3ioClient
from shardline_v3io.faults import FaultConfig
from shardline_v3io.testing_server import RunningServer, start_server

BOUND_SIGMAS = 4.0
SHARDS = 8


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _create(session: requests.Session, server: RunningServer, shards: int = SHARDS) -> str:
    url = f"{server.url}/bigdata/fi-{uuid.uuid4().hex[:8]}/"
    resp = session.post(url, headers={"X-v3io-function": "CreateStream"}, json={"ShardCount": shards})
    assert resp.status_code == 204, resp.text
    return url


def _put(session: requests.Session, url: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    resp = session.post(
        url, headers={"X-v3io-function": "PutRecords"}, data=orjson.dumps({"Records": records})
    )
    assert resp.status_code == 200, resp.text
    results: list[dict[str, Any]] = resp.json()["Records"]
    return results


def _read_shard(session: requests.Session, url: str, shard: int) -> list[bytes]:
    """Every record of a shard, in stream order (GetRecords until nothing is behind)."""
    loc = session.put(f"{url}{shard}/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"})
    location = loc.json()["Location"]
    out: list[bytes] = []
    while True:
        got = session.put(
            f"{url}{shard}/", headers={"X-v3io-function": "GetRecords"}, json={"Location": location}
        ).json()
        out += [base64.b64decode(r["Data"]) for r in got["Records"]]
        location = got["NextLocation"]
        if not got["Records"] or got["RecordsBehindLatest"] == 0:
            return out


def _assert_rate(failed: int, total: int, rate: float) -> None:
    bound = BOUND_SIGMAS * math.sqrt(rate * (1 - rate) / total)
    assert abs(failed / total - rate) <= bound, f"failed {failed}/{total} = {failed / total:.4f}, not {rate}"


# -- per-record faults: the stated rate in both shapes ----------------------------------------------


def test_tail_fails_the_stated_rate_with_one_record_per_shard(
    thread_server_factory: Callable[..., RunningServer],
) -> None:
    server = thread_server_factory(fault_rate=0.3, fault_shape="tail", fault_seed=11)
    with requests.Session() as session:
        url = _create(session, server)
        failed = total = 0
        for _ in range(500):  # 4,000 records; the old rule failed ~58% here
            records = [{"Data": _b64(b"x"), "ShardId": s} for s in range(SHARDS)]
            results = _put(session, url, records)
            failed += sum("ErrorCode" in r for r in results)
            total += len(results)
    _assert_rate(failed, total, 0.3)


def test_tail_fails_the_stated_rate_as_a_tail_of_each_shard(
    thread_server_factory: Callable[..., RunningServer],
) -> None:
    server = thread_server_factory(fault_rate=0.3, fault_shape="tail", fault_seed=12)
    per_shard = 100
    with requests.Session() as session:
        url = _create(session, server)
        failed = total = 0
        cut_counts: set[int] = set()
        written: dict[int, list[bytes]] = {s: [] for s in range(SHARDS)}
        for req in range(50):  # shards interleaved in the request: record i goes to shard i % 8
            records = [
                {"Data": _b64(f"{req}-{i}".encode()), "ShardId": i % SHARDS}
                for i in range(per_shard * SHARDS)
            ]
            results = _put(session, url, records)
            for shard in range(SHARDS):
                outcome = ["ErrorCode" in r for r in results[shard::SHARDS]]
                m = sum(outcome)
                assert outcome == [False] * (per_shard - m) + [True] * m  # the last m of the shard fail
                cut_counts.add(m)
                written[shard] += [
                    f"{req}-{i}".encode() for i in range(shard, shard + SHARDS * (per_shard - m), SHARDS)
                ]
            failed += sum("ErrorCode" in r for r in results)
            total += len(results)
            assert {r["ErrorMessage"] for r in results if "ErrorCode" in r} <= {"ResourceBusyException"}
        _assert_rate(failed, total, 0.3)
        assert len(cut_counts) > 10  # m varies (Binomial(100, 0.3)), not all-or-nothing
        for shard in range(SHARDS):  # exactly the records before each cut were written, in order
            assert _read_shard(session, url, shard) == written[shard]


def test_random_shape_keeps_its_rate(thread_server_factory: Callable[..., RunningServer]) -> None:
    server = thread_server_factory(fault_rate=0.3, fault_shape="random", fault_seed=13)
    with requests.Session() as session:
        url = _create(session, server)
        failed = total = 0
        for _ in range(20):
            results = _put(session, url, [{"Data": _b64(b"x"), "ShardId": i % SHARDS} for i in range(1000)])
            failed += sum("ErrorCode" in r for r in results)
            total += len(results)
    _assert_rate(failed, total, 0.3)


# -- latency ----------------------------------------------------------------------------------------


async def _timed_put(session: aiohttp.ClientSession, url: str, data: bytes) -> float:
    body = orjson.dumps({"Records": [{"Data": _b64(data), "ShardId": 0}]})
    start = time.perf_counter()
    async with session.post(url, headers={"X-v3io-function": "PutRecords"}, data=body) as resp:
        assert resp.status == 200
        assert (await resp.json())["FailedRecordCount"] == 0
    return time.perf_counter() - start


async def _timed_describe(session: aiohttp.ClientSession, url: str) -> float:
    start = time.perf_counter()
    async with session.put(url, headers={"X-v3io-function": "DescribeStream"}) as resp:
        assert resp.status == 200
    return time.perf_counter() - start


def test_latency_delays_put_answers_up_to_ms_without_blocking_the_server(
    thread_server_factory: Callable[..., RunningServer],
) -> None:
    server = thread_server_factory(fault_latency=200, fault_seed=14)  # rate 1.0 by default
    with requests.Session() as sync:
        url = _create(sync, server)

    async def run() -> tuple[list[float], float]:
        async with aiohttp.ClientSession() as session:
            # more delayed puts than the server processes bodies at once (32)
            puts = [asyncio.create_task(_timed_put(session, url, f"p{i}".encode())) for i in range(48)]
            await asyncio.sleep(0.02)  # the puts are in the server, waiting to be answered
            describe = await _timed_describe(session, url)
            return list(await asyncio.gather(*puts)), describe

    put_times, describe_time = asyncio.run(run())
    assert describe_time < 0.1  # not queued behind the delayed answers
    assert max(put_times) <= 0.2 + 0.3  # 200 ms plus slack for a loaded machine
    assert max(put_times) >= 0.1  # delays are drawn in [0, 200] ms: 48 draws reach past 100
    assert 0.05 <= sum(put_times) / len(put_times) <= 0.25  # mean delay ~100 ms


def test_latency_writes_records_before_the_delayed_answer(
    thread_server_factory: Callable[..., RunningServer],
) -> None:
    server = thread_server_factory(fault_latency=800, fault_seed=15)
    with requests.Session() as sync:
        url = _create(sync, server, shards=1)

    async def seen_before_answer(session: aiohttp.ClientSession, data: bytes) -> tuple[bool, float]:
        put = asyncio.create_task(_timed_put(session, url, data))
        deadline = time.monotonic() + 5.0
        loc = await (
            await session.put(f"{url}0/", headers={"X-v3io-function": "Seek"}, json={"Type": "EARLIEST"})
        ).json()
        while time.monotonic() < deadline and not put.done():
            async with session.put(f"{url}0/", headers={"X-v3io-function": "GetRecords"}, json=loc) as r:
                if data in [base64.b64decode(x["Data"]) for x in (await r.json())["Records"]]:
                    return not put.done(), await put
            await asyncio.sleep(0.01)
        return False, await put

    async def run() -> list[tuple[bool, float]]:
        async with aiohttp.ClientSession() as session:
            return [await seen_before_answer(session, f"w{i}".encode()) for i in range(5)]

    outcomes = asyncio.run(run())
    slow = [seen for seen, took in outcomes if took >= 0.2]
    assert slow  # with delays up to 800 ms, some answers took 200 ms or more
    assert all(slow)  # and their record was readable while the answer was held back


def test_latency_rate_delays_that_fraction_of_answers() -> None:
    config = FaultConfig(latency_ms=50, latency_rate=0.25, seed=16)
    delays = [config.answer_delay_s() for _ in range(4000)]
    _assert_rate(sum(d > 0 for d in delays), len(delays), 0.25)
    assert max(delays) <= 0.05
    assert FaultConfig(latency_ms=50).latency_rate == 1.0


# -- connection resets ------------------------------------------------------------------------------


def test_reset_drops_the_connection_after_writing(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", fault_reset_rate=1.0) as server, requests.Session() as session:
        url = _create(session, server, shards=1)
        body = orjson.dumps({"Records": [{"Data": _b64(b"r-requests")}, {"Data": _b64(b"r2-requests")}]})
        with pytest.raises(requests.ConnectionError):
            session.post(url, headers={"X-v3io-function": "PutRecords"}, data=body)

        async def aio_put() -> None:
            async with aiohttp.ClientSession() as aio:
                body = orjson.dumps({"Records": [{"Data": _b64(b"r-aiohttp")}]})
                async with aio.post(url, headers={"X-v3io-function": "PutRecords"}, data=body) as resp:
                    await resp.read()

        with pytest.raises(aiohttp.ClientConnectionError):  # ClientOSError: connection reset by peer
            asyncio.run(aio_put())
        # the outcome the clients could not see: every record written, once
        assert _read_shard(session, url, 0) == [b"r-requests", b"r2-requests", b"r-aiohttp"]


def test_reset_rate_drops_that_fraction_of_puts(thread_server_factory: Callable[..., RunningServer]) -> None:
    server = thread_server_factory(fault_reset_rate=0.5, fault_seed=17)
    requests_n = 200
    with requests.Session() as session:
        url = _create(session, server, shards=1)
        reset = 0
        for i in range(requests_n):
            body = orjson.dumps({"Records": [{"Data": _b64(f"{i}".encode())}]})
            try:
                resp = session.post(url, headers={"X-v3io-function": "PutRecords"}, data=body)
                assert resp.status_code == 200
            except requests.ConnectionError:
                reset += 1
        _assert_rate(reset, requests_n, 0.5)
        assert _read_shard(session, url, 0) == [f"{i}".encode() for i in range(requests_n)]


def test_shardline_client_sees_resets_and_late_answers_as_retryable_unknown_outcomes(
    thread_server_factory: Callable[..., RunningServer],
) -> None:
    resetting = thread_server_factory(fault_reset_rate=1.0)
    slow = thread_server_factory(fault_latency=1000, fault_latency_rate=1.0, fault_seed=18)
    with requests.Session() as session:
        urls = [_create(session, server, shards=1) for server in (resetting, slow)]
    body = orjson.dumps({"Records": [{"Data": _b64(b"unknown")}]})

    async def put(server: RunningServer, url: str, timeout: float) -> tuple[TransportError, int]:
        path = url.split("/bigdata/", 1)[1]
        attempts = 0
        async with V3ioClient(server.url, timeout=timeout) as client:
            with pytest.raises(TransportError) as err:
                while attempts < 20:  # the slow server: until an answer comes after the timeout
                    attempts += 1
                    await client.put_records_body("bigdata", path, body)
            return err.value, attempts

    reset_error, _ = asyncio.run(put(resetting, urls[0], 5.0))
    assert reset_error.retryable and "ClientOSError" in str(reset_error)
    timeout_error, attempts = asyncio.run(put(slow, urls[1], 0.2))
    assert timeout_error.retryable and "timed out" in str(timeout_error)
    with requests.Session() as session:
        assert _read_shard(session, urls[0], 0) == [b"unknown"]  # written although the client failed
        # every attempt was written, the timed-out one too
        assert _read_shard(session, urls[1], 0) == [b"unknown"] * attempts


# -- bad values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--fault-rate", "1.5", "error: --fault-rate must be a fraction within [0, 1]"),
        ("--fault-reset-rate", "-0.1", "error: --fault-reset-rate must be a fraction within [0, 1]"),
        ("--fault-latency", "-1", "error: --fault-latency must be a number of milliseconds >= 0"),
        ("--fault-latency-rate", "2", "error: --fault-latency-rate must be a fraction within [0, 1]"),
    ],
)
def test_serve_refuses_a_bad_fault_value_with_one_line(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--fault-latency", "10", flag, value]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(message)


def test_fault_config_refuses_latency_rate_without_latency() -> None:
    with pytest.raises(ConfigError, match="--fault-latency-rate needs --fault-latency"):
        FaultConfig(latency_rate=0.5)
