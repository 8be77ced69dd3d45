"""Client CPU per record of the Kinesis send path: shardline's signed pre-encoded body over aiohttp
vs aiobotocore's ``put_records``, side by side in one run, against a local null endpoint.

The null endpoint (an aiohttp app in a child process, so its CPU is not counted) answers every
PutRecords with success for each record. Each client sends the same 500-record requests
(``--record-bytes`` of Data, distinct keys) with ``--concurrency`` requests in flight; the figure is
this process's CPU time (user + system) per record. "shardline, encode + send" adds the wire's
column-at-a-time encoding of the records (``KinesisWire.fragments`` + ``body``) to each request,
which aiobotocore does inside ``put_records``. "shardline, botocore SigV4Auth" is the pre-encoded
send with each request signed by botocore's ``SigV4Auth.add_auth`` on an ``AWSRequest`` instead of
the client's own signer (:mod:`shardline_kinesis.sigv4`, equal to it byte for byte).

    uv run python benchmarks/kinesis_send_path.py [--requests 400] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import time
from typing import Any

_OK_ENTRY = (
    b'{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898",'
    b'"ShardId":"shardId-000000000000"}'
)


class _BotocoreSigner:
    """The signer the client had before :mod:`shardline_kinesis.sigv4`: botocore's SigV4Auth."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        self.endpoint_url = endpoint_url
        self.region = region

    def headers(self, credentials: Any, headers: dict[str, str], body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=self.endpoint_url, data=body, headers=dict(headers))
        SigV4Auth(credentials, "kinesis", self.region).add_auth(request)
        return dict(request.headers.items())


def _serve(port: int, ready: Any) -> None:
    from aiohttp import web

    answers: dict[int, bytes] = {}

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        n = body.count(b'"PartitionKey"')
        answer = answers.get(n)
        if answer is None:
            answer = answers[n] = b'{"FailedRecordCount":0,"Records":[' + b",".join([_OK_ENTRY] * n) + b"]}"
        return web.Response(body=answer, content_type="application/x-amz-json-1.1")

    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_post("/", handle)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _records(n: int, size: int) -> list[tuple[bytes, str]]:
    return [(os.urandom(size // 2).hex().encode()[:size], f"key-{i}") for i in range(n)]


async def _run(label: str, send: Any, requests: int, concurrency: int, per_request: int) -> float:
    await send()  # warm up: connections, credentials, first imports
    queue = list(range(requests))

    async def worker() -> None:
        while queue:
            queue.pop()
            await send()

    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    us = cpu / (requests * per_request) * 1e6
    print(f"{label:<34} {us:8.2f} us CPU/record   {requests * per_request / wall:>10,.0f} records/s wall")
    return us


async def main(args: argparse.Namespace) -> None:
    import numpy as np
    import pyarrow as pa
    from shardline.wire import Placement
    from shardline_kinesis.client import KinesisClient
    from shardline_kinesis.transport import KinesisTransport
    from shardline_kinesis.wire import KinesisWire

    port = _free_port()
    ready = mp.get_context("spawn").Event()
    server = mp.get_context("spawn").Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    if not ready.wait(30):
        raise SystemExit("the null endpoint did not start within 30 s")
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    n = 500
    recs = _records(n, args.record_bytes)
    wire = KinesisWire("bench")
    keys = pa.array([k for _, k in recs], pa.large_string())
    import orjson

    key_json = pa.array([orjson.dumps(k) for _, k in recs], pa.large_binary())
    placement = Placement(
        data=pa.array([d for d, _ in recs], pa.large_binary()),
        key_json=key_json,
        key_index=np.arange(n, dtype=np.int64),
        shards=np.zeros(n, np.int64),
        shard_map=None,  # type: ignore[arg-type]
        addressed=False,
        client_info=None,
    )
    del keys

    def encode() -> bytes:
        frags = wire.fragments(placement)
        end = int(np.frombuffer(frags.buffers()[1], np.int64)[len(frags)])
        return wire.body([memoryview(frags.buffers()[2])[:end]])

    body = encode()
    transport = KinesisTransport(f"kinesis://bench?region=us-east-1&endpoint_url={endpoint}")
    assert isinstance(transport.client, KinesisClient)

    async def ours_send() -> None:
        result = await transport.put_records_body(body, n)
        assert not result.failures

    async def ours_encode_send() -> None:
        result = await transport.put_records_body(encode(), n)
        assert not result.failures

    botocore_signed = KinesisTransport(f"kinesis://bench?region=us-east-1&endpoint_url={endpoint}")
    assert isinstance(botocore_signed.client, KinesisClient)
    botocore_signed.client._signer = _BotocoreSigner(botocore_signed.client.endpoint_url, "us-east-1")

    async def botocore_sign_send() -> None:
        result = await botocore_signed.put_records_body(body, n)
        assert not result.failures

    from aiobotocore.session import get_session

    records = [{"Data": d, "PartitionKey": k} for d, k in recs]
    session = get_session()
    print(
        f"{n}-record PutRecords, {args.record_bytes}-byte Data, {args.concurrency} in flight, "
        f"{args.requests} requests per client, null endpoint in a child process"
    )
    async with session.create_client("kinesis", region_name="us-east-1", endpoint_url=endpoint) as boto:

        async def aiobotocore_send() -> None:
            answer = await boto.put_records(StreamName="bench", Records=records)
            assert answer["FailedRecordCount"] == 0

        results = {}
        for _ in range(args.rounds):
            results.setdefault("ours", []).append(
                await _run("shardline, pre-encoded body", ours_send, args.requests, args.concurrency, n)
            )
            results.setdefault("ours+botocore-sign", []).append(
                await _run(
                    "shardline, botocore SigV4Auth", botocore_sign_send, args.requests, args.concurrency, n
                )
            )
            results.setdefault("ours+enc", []).append(
                await _run("shardline, encode + send", ours_encode_send, args.requests, args.concurrency, n)
            )
            results.setdefault("boto", []).append(
                await _run("aiobotocore put_records", aiobotocore_send, args.requests, args.concurrency, n)
            )
    await transport.close()
    await botocore_signed.close()
    server.kill()
    best = {k: min(v) for k, v in results.items()}
    print(
        f"ratio (best of {args.rounds}): aiobotocore / shardline = {best['boto'] / best['ours']:.1f}x "
        f"(pre-encoded), {best['boto'] / best['ours+enc']:.1f}x (encode + send); the botocore signer "
        f"costs {best['ours+botocore-sign'] / best['ours']:.2f}x the client's own"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
