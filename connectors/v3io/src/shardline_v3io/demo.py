"""``shardline demo``: the embedded server end to end on one laptop, no account needed.

Starts the server in-process on a free port (data under ``.shardline/demo``), creates a stream,
puts records with partition keys over the v3io Web API, reads every shard back and prints what was
read and where the data lives.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table
from shardline.transport import PutRecord

from shardline_v3io.client import V3ioClient

CONTAINER = "bigdata"
STREAM = "demo/events"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


async def _run_demo(url: str, shards: int, count: int, console: Console) -> list[tuple[int, object]]:
    client = V3ioClient(url)
    try:
        await client.delete_stream(CONTAINER, STREAM)
        await client.create_stream(CONTAINER, STREAM, shards, retention_hours=24)
        records = [
            PutRecord(
                data=orjson.dumps(
                    {"event": i, "user": USERS[i % len(USERS)], "action": ("view", "click", "buy")[i % 3]}
                ),
                partition_key=USERS[i % len(USERS)],
            )
            for i in range(count)
        ]
        results = await client.put_records(CONTAINER, STREAM, records)
        failed = [r for r in results if not r.ok]
        console.print(f"put {len(results) - len(failed)} records with partition keys ({len(failed)} failed)")
        read: list[tuple[int, object]] = []
        for shard in range(shards):
            location = await client.seek(CONTAINER, STREAM, shard, "EARLIEST")
            while True:
                page = await client.get_records(CONTAINER, STREAM, shard, location, limit=1000)
                read.extend((shard, rec) for rec in page.records)
                location = page.next_location
                if page.records_behind_latest == 0:
                    break
        return read
    finally:
        await client.close()


@click.command(name="demo")
@click.option(
    "--data-dir",
    default=".shardline/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo server stores its streams.",
)
@click.option("--shards", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--records", "count", default=12, show_default=True, type=click.IntRange(1, 1000))
def demo_command(data_dir: str, shards: int, count: int) -> None:
    """Start the local stream server, write records with partition keys, read them back."""
    from shardline_v3io.testing_server import start_server_thread

    console = Console()
    started = time.perf_counter()
    server = start_server_thread(Path(data_dir))
    try:
        console.print(f"[bold]shardline demo[/bold]: embedded v3io-compatible stream server on {server.url}")
        console.print(f"stream {CONTAINER}/{STREAM}: {shards} shards")
        read = asyncio.run(_run_demo(server.url, shards, count, console))
    finally:
        server.stop()
    table = Table(title=f"read back from {CONTAINER}/{STREAM}")
    for col in ("shard", "sequence", "partition key", "data"):
        table.add_column(col)
    for shard, rec in read:
        table.add_row(str(shard), str(rec.sequence_number), rec.partition_key or "", rec.data.decode())  # type: ignore[attr-defined]
    console.print(table)
    keys_on: dict[str, set[int]] = {}
    for shard, rec in read:
        keys_on.setdefault(rec.partition_key or "", set()).add(shard)  # type: ignore[attr-defined]
    same = all(len(s) == 1 for s in keys_on.values())
    console.print(
        f"{len(read)} records read; every partition key stayed on one shard: {'yes' if same else 'NO'}; "
        f"{time.perf_counter() - started:.1f}s"
    )
    where = Path(data_dir).resolve() / CONTAINER / STREAM
    console.print(f"data lives in {where} (per-shard segment files under .shardline-shards/)")
    console.print(
        f"serve it yourself:  shardline serve --data-dir {data_dir}\n"
        f"then read it:       shardline stream get http://127.0.0.1:8081/{CONTAINER}/{STREAM}"
    )
    if len(read) != count or not same:
        raise click.ClickException("the demo did not read back what it wrote")
