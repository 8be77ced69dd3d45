"""PutRecords ingest rate of the embedded server vs. a null HTTP handler, side by side.

Load: 100-byte records, 1,000 per request, 8 shards (explicit ShardId, as the sink sends),
several concurrent aiohttp clients in this process; each server runs in its own subprocess.
The null handler is a trivial aiohttp app that reads the body, parses nothing and answers a
fixed tiny JSON, so the ratio shows what the store and the protocol cost on top of HTTP itself.

    uv run python benchmarks/server_ingest.py [--seconds 5] [--clients 8] [--key-mode shard|key|sink|none]

``--key-mode sink`` sends what StreamSink sends: PartitionKey and the ShardId computed from it,
records ordered by shard.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time

import aiohttp
import orjson
from shardline.partitioning import shard_for_key
from shardline_v3io.testing_server import start_server

RECORD_BYTES = 100
PER_REQUEST = 1000
SHARDS = 8


def null_server_main(port_file: str) -> None:
    """A trivial aiohttp server: read the body, discard it, answer a constant."""
    from aiohttp import web

    body = b'{"FailedRecordCount":0,"Records":[]}'

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handle), handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def make_bodies(key_mode: str, n_bodies: int = 16) -> list[bytes]:
    """Pre-encoded PutRecords bodies (the client side costs nothing but HTTP)."""
    bodies = []
    for b in range(n_bodies):
        recs = []
        for i in range(PER_REQUEST):
            data = base64.b64encode(os.urandom(RECORD_BYTES)).decode()
            rec: dict[str, object] = {"Data": data}
            if key_mode == "shard":
                rec["ShardId"] = (b * PER_REQUEST + i) % SHARDS
            elif key_mode in ("key", "sink"):
                key = f"user-{(b * 7919 + i) % 5000}"
                rec["PartitionKey"] = key
                if key_mode == "sink":
                    rec["ShardId"] = shard_for_key(key, SHARDS)
            recs.append(rec)
        if key_mode == "sink":
            recs.sort(key=lambda r: r["ShardId"])
        bodies.append(orjson.dumps({"Records": recs}))
    return bodies


async def load(url: str, bodies: list[bytes], seconds: float, clients: int, check: bool) -> tuple[float, int]:
    """Run ``clients`` concurrent senders for ``seconds``; return (records/s, failed records)."""
    headers = {"X-v3io-function": "PutRecords", "Content-Type": "application/json"}
    target = url + "/bigdata/bench/"
    connector = aiohttp.TCPConnector(limit=clients)
    sent = 0
    failed = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm up
        async with session.post(target, data=bodies[0], headers=headers) as r:
            await r.read()
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def worker(w: int) -> None:
            nonlocal sent, failed
            i = w
            while time.perf_counter() < deadline:
                async with session.post(target, data=bodies[i % len(bodies)], headers=headers) as r:
                    payload = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {payload[:200]!r}")
                    if check:
                        failed += orjson.loads(payload)["FailedRecordCount"]
                sent += PER_REQUEST
                i += clients

        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.perf_counter() - start
    return sent / elapsed, failed


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    return sum(cpu_split(pid))


def start_null_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--null-server"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"null server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


async def create_stream(url: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url + "/bigdata/bench/",
            data=orjson.dumps({"ShardCount": SHARDS, "RetentionPeriodHours": 24}),
            headers={"X-v3io-function": "CreateStream"},
        ) as r,
    ):
        assert r.status in (204, 409), r.status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--key-mode", choices=["shard", "key", "sink", "none"], default="shard")
    parser.add_argument("--fsync", action="store_true", help="run the server with --fsync")
    parser.add_argument("--null-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()
    if args.null_server:
        null_server_main("")
        return
    bodies = make_bodies(args.key_mode)
    print(
        f"load: {RECORD_BYTES}-byte records, {PER_REQUEST}/request ({len(bodies[0]) / 1e6:.2f} MB body), "
        f"{SHARDS} shards, placement={args.key_mode}, {args.clients} concurrent clients, "
        f"{args.seconds:.0f}s each"
    )
    data_dir = tempfile.mkdtemp(prefix="shardline-bench-")
    try:
        null_proc, null_url = start_null_server()
        try:
            cpu0 = cpu_seconds(null_proc.pid)
            null_rate, _ = asyncio.run(load(null_url, bodies, args.seconds, args.clients, check=False))
            null_cpu = cpu_seconds(null_proc.pid) - cpu0
        finally:
            null_proc.kill()
            null_proc.wait()
        server = start_server(data_dir, fsync=args.fsync)
        try:
            asyncio.run(create_stream(server.url))
            user0, sys0 = cpu_split(server.pid)
            rate, failed = asyncio.run(load(server.url, bodies, args.seconds, args.clients, check=True))
            user1, sys1 = cpu_split(server.pid)
            serve_cpu = (user1 - user0) + (sys1 - sys0)
            serve_split = (user1 - user0, sys1 - sys0)
        finally:
            server.stop()
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data_dir) for f in fs)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    # records per CPU-second of the server process: what one core sustains, whatever else runs
    null_per_cpu = null_rate * args.seconds / max(null_cpu, 1e-9)
    serve_per_cpu = rate * args.seconds / max(serve_cpu, 1e-9)
    print(
        f"null handler      : {null_rate:12,.0f} records/s   "
        f"{null_per_cpu:12,.0f} records per server CPU-second"
    )
    print(
        f"shardline serve   : {rate:12,.0f} records/s   {serve_per_cpu:12,.0f} records per server CPU-second"
        f"  (failed: {failed}, on disk: {size / 1e6:.1f} MB)"
    )
    print(f"ratio serve/null  : {rate / null_rate:12.2f}               {serve_per_cpu / null_per_cpu:12.2f}")
    print(
        f"server CPU: user {serve_split[0]:.2f}s, system {serve_split[1]:.2f}s over {args.seconds:.0f}s"
        f" = {1e6 / serve_per_cpu:.2f} us per record (null handler {1e6 / null_per_cpu:.2f} us)"
    )
    avg = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {avg:.2f} (other work skews the wall rates)")


if __name__ == "__main__":
    main()
