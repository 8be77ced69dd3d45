"""A null Kinesis endpoint: every PutRecords succeeds, nothing is stored (for client CPU measurements).

    python -m shardline_kinesis.nullendpoint --shards 4     # prints "listening on http://127.0.0.1:N"

Run it in another process than the client being measured (its CPU would count otherwise). It
answers, for any stream name:

- ``PutRecords``: 200, ``FailedRecordCount: 0`` and one success entry per record, in request
  order, with the ``ShardId`` Kinesis would pick (MD5 of ``PartitionKey`` as a 128-bit integer, or
  ``ExplicitHashKey``, within the shards' ``HashKeyRange``s) and a per-shard ``SequenceNumber``;
- ``ListShards``, ``DescribeStreamSummary``, ``DescribeStream``: an ACTIVE stream of ``--shards``
  shards splitting the hash-key space evenly;
- ``ListStreams`` the name ``null``; ``CreateStream`` and anything else: ``{}``.

Shapes from https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html and
``API_ListShards.html``. Not a test double for behaviour: it checks nothing (no limits, no signatures).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import itertools
import signal
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

from shardline_kinesis._aiothread import ThreadedServer, serve

_TARGET = "Kinesis_20131202."
_HASH_SPACE = 1 << 128
_JSON = {"Content-Type": "application/x-amz-json-1.1"}


def even_shards(count: int) -> list[dict[str, Any]]:
    """``count`` open shards whose hash-key ranges split [0, 2**128) evenly, as ListShards lists them."""
    bounds = [i * _HASH_SPACE // count for i in range(count)] + [_HASH_SPACE]
    return [
        {
            "ShardId": f"shardId-{i:012d}",
            "HashKeyRange": {"StartingHashKey": str(bounds[i]), "EndingHashKey": str(bounds[i + 1] - 1)},
            "SequenceNumberRange": {"StartingSequenceNumber": f"{1:056d}"},
        }
        for i in range(count)
    ]


class NullHandler:
    """The request handler (see the module docstring); ``records`` counts PutRecords entries answered."""

    def __init__(self, shards: int = 1) -> None:
        self.shards = even_shards(shards)
        self._starts = [int(s["HashKeyRange"]["StartingHashKey"]) for s in self.shards]
        self._sequence = [itertools.count(1) for _ in self.shards]
        self.records = 0
        self.requests = 0

    async def startup(self) -> None:
        return None

    async def cleanup(self) -> None:
        return None

    def _entry(self, record: dict[str, Any]) -> dict[str, str]:
        explicit = record.get("ExplicitHashKey")
        if explicit is not None:
            point = int(explicit)
        else:
            point = int.from_bytes(hashlib.md5(str(record.get("PartitionKey", "")).encode()).digest(), "big")
        shard = bisect.bisect_right(self._starts, point) - 1
        return {
            "ShardId": self.shards[shard]["ShardId"],
            "SequenceNumber": f"{next(self._sequence[shard]):056d}",
        }

    def _summary(self, name: str) -> dict[str, Any]:
        return {
            "StreamName": name,
            "StreamARN": f"arn:aws:kinesis:us-east-1:000000000000:stream/{name}",
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 0,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
            "OpenShardCount": len(self.shards),
            "ConsumerCount": 0,
        }

    def answer(self, operation: str, doc: dict[str, Any]) -> dict[str, Any]:
        """The answer document of ``operation`` (``PutRecords``, ``ListShards``, …) to ``doc``."""
        name = str(doc.get("StreamName") or "null")
        if operation == "PutRecords":
            records = doc.get("Records") or []
            self.records += len(records)
            return {"FailedRecordCount": 0, "Records": [self._entry(r) for r in records]}
        if operation == "ListShards":
            return {"Shards": self.shards}
        if operation == "DescribeStreamSummary":
            return {"StreamDescriptionSummary": self._summary(name)}
        if operation == "DescribeStream":
            description = self._summary(name) | {"Shards": self.shards, "HasMoreShards": False}
            return {"StreamDescription": description}
        if operation == "ListStreams":
            return {"StreamNames": ["null"], "HasMoreStreams": False}
        return {}

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        body = await request.read()
        self.requests += 1
        operation = request.headers.get("X-Amz-Target", "").removeprefix(_TARGET)
        try:
            doc = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            doc = {}
        return web.Response(body=orjson.dumps(self.answer(operation, doc)), headers=_JSON)


def start_null_endpoint_thread(shards: int = 1) -> ThreadedServer:
    """The null endpoint in a background thread of this process (``.url``, ``.handler.records``)."""
    return ThreadedServer(NullHandler(shards), name="shardline-kinesis-null-endpoint")


async def _main(port: int, shards: int) -> None:
    runner, url = await serve(NullHandler(shards), port=port)
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """``python -m shardline_kinesis.nullendpoint [--port N] [--shards N]``; SIGTERM stops it."""
    parser = argparse.ArgumentParser(
        prog="python -m shardline_kinesis.nullendpoint", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--shards", type=int, default=1, help="shards of the stream it pretends to hold")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.port, max(1, args.shards)))


if __name__ == "__main__":
    main()
