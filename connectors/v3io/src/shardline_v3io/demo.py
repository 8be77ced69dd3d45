"""``shardline demo``: the main job end to end on one laptop, no account needed.

1. writes sample Parquet events (``shardline_parquet.write_sample``) under the demo directory;
2. starts the embedded v3io-compatible stream server on a free port (a subprocess, so the server
   and the pipeline each get a core), data under ``DATA_DIR/server``;
3. runs the backfill pipeline :data:`DEMO_PIPELINE` (the text of the repository's
   ``examples/backfill.toml``, shipped here so the demo works from any directory) into it through
   the sink engine;
4. reads the stream back over the v3io Web API and checks that every row arrived once, that each
   user's events are in order and that each user stayed on one shard; prints a sample and where
   the data lives.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import orjson
from rich.table import Table
from shardline import ConfigError, make_console

from shardline_v3io.client import V3ioClient

CONTAINER = "bigdata"
STREAM = "demo/events"
SAMPLE_PER_SHARD = 2

# The repository's examples/backfill.toml, verbatim (a test keeps the two identical): the demo runs
# this text when no --config is given, so that it needs no checkout.
DEMO_PIPELINE = """\
# Backfill a directory of Parquet files into a stream.
#
#   uv run shardline demo                                        # sample events in .shardline/demo/sample/
#   uv run shardline serve --data-dir .shardline/demo/server &   # the embedded stream server, port 8081
#   uv run shardline run examples/backfill.toml                  # Ctrl-C stops cleanly; run again to resume
#
# `shardline demo` writes its sample data to .shardline/demo/sample/ (this file's default path) and
# runs this same pipeline (a copy ships inside shardline-v3io) against its own server.
# Override anything from the command line:  --set source.path=elsewhere/ --set sink.create.shards=16
# or through the environment variables below.

[source]
type = "parquet"
path = "${EVENTS_PATH:-.shardline/demo/sample}"   # a file, a directory, a glob, or a list of them
columns = ["seq", "user_id", "kind", "amount", "ts"]   # projection (default: every column)
# filter = "kind in ('cart', 'purchase') and amount >= 10"
batch_size = 20000

[sink]
stream = "${EVENTS_STREAM:-http://127.0.0.1:8081/bigdata/events}"   # or v3io:///… or local://DIR/…
create = { shards = 8, retention_hours = 24 }   # create the stream when missing
dead_letter = ".shardline/events.dead.jsonl"    # records that can never be written, with the reason

[mapping]
partition_key = "user_id"                       # same user -> same shard, in order
data = "json"                                   # one JSON object per row
partitioner = "hash"

[checkpoint]
path = "${EVENTS_CHECKPOINT:-.shardline/events.ckpt}"
"""


def shardline_command() -> str:
    """How the user can start ``shardline`` from their shell: ``uv run shardline`` under ``uv run``
    (a checkout), ``shardline`` when it is on PATH (a pip install), else the script's full path."""
    # `uv run` sets UV and VIRTUAL_ENV (its project's venv, on PATH only inside `uv run`)
    venv = os.environ.get("VIRTUAL_ENV")
    if os.environ.get("UV") and venv and Path(venv).resolve() == Path(sys.prefix).resolve():
        return "uv run shardline"
    script = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin") / "shardline"
    on_path = shutil.which("shardline")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "shardline"
    return str(script)


@dataclass
class ReadBack:
    """What reading the whole stream back found (counts only, plus a small sample)."""

    records: int = 0
    duplicates: int = 0
    out_of_order_users: set[str] = field(default_factory=set)
    shards_of_user: dict[str, set[int]] = field(default_factory=dict)
    sample: list[tuple[int, int, str, bytes]] = field(default_factory=list)


async def _read_back(url: str, shards: int, rows: int) -> ReadBack:
    """Read every shard page by page; memory holds one page, per-user counters and a bit per row."""
    found = ReadBack()
    last_seq_of_user: dict[str, int] = {}
    seen = bytearray((rows + 7) // 8)
    client = V3ioClient(url)
    try:
        for shard in range(shards):
            location = await client.seek(CONTAINER, STREAM, shard, "EARLIEST")
            while True:
                page = await client.get_records(CONTAINER, STREAM, shard, location, limit=1000)
                for rec in page.records:
                    row = orjson.loads(rec.data)
                    user, seq = str(row["user_id"]), int(row["seq"])
                    found.records += 1
                    if seen[seq >> 3] & (1 << (seq & 7)):
                        found.duplicates += 1
                    seen[seq >> 3] |= 1 << (seq & 7)
                    if seq < last_seq_of_user.get(user, -1):
                        found.out_of_order_users.add(user)
                    last_seq_of_user[user] = seq
                    found.shards_of_user.setdefault(user, set()).add(shard)
                    if sum(1 for s in found.sample if s[0] == shard) < SAMPLE_PER_SHARD:
                        found.sample.append((shard, rec.sequence_number, rec.partition_key or "", rec.data))
                location = page.next_location
                if not page.records or page.records_behind_latest == 0:
                    break
    finally:
        await client.close()
    return found


async def _reset_stream(url: str) -> None:
    client = V3ioClient(url)
    try:
        await client.delete_stream(CONTAINER, STREAM)
    finally:
        await client.close()


@click.command(name="demo")
@click.option(
    "--data-dir",
    default=".shardline/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo keeps its sample Parquet, its server's streams and its checkpoint.",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="The backfill pipeline to run against the embedded server "
    "[default: the built-in copy of examples/backfill.toml].",
)
@click.option(
    "--rows",
    default=200_000,
    show_default=True,
    type=click.IntRange(1, 100_000_000),
    help="How many sample events (rows) to write to Parquet and backfill.",
)
@click.option(
    "--shards",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Shard count of the demo stream (re-created on every run).",
)
def demo_command(data_dir: str, config_path: str | None, rows: int, shards: int) -> None:
    """Backfill sample Parquet into a stream on the embedded server, then read it back and check it."""
    try:
        from shardline import run_pipeline
        from shardline_parquet import write_sample
    except ImportError as exc:  # the demo needs the Parquet plugin
        raise ConfigError(f"the demo needs shardline-parquet ({exc}); pip install shardline-parquet") from exc
    from shardline_v3io.testing_server import start_server

    if config_path is not None and not Path(config_path).is_file():
        raise ConfigError(
            f"{config_path}: no such pipeline file; pass --config PIPELINE.toml or leave it out"
        )
    console = make_console()  # no wrapping at 80 columns in pipes and logs
    base = Path(data_dir)
    sample_dir, server_dir, state_dir = base / "sample", base / "server", base / "state"
    shutil.rmtree(sample_dir, ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)  # a finished checkpoint would make the run a no-op
    state_dir.mkdir(parents=True, exist_ok=True)
    if config_path is None:
        config_path = str(state_dir / "backfill.toml")
        Path(config_path).write_text(DEMO_PIPELINE, encoding="utf-8")
    started = time.perf_counter()
    files = write_sample(sample_dir, rows)
    console.print(
        f"[bold]shardline demo[/bold]: wrote {rows:,} sample events into {len(files)} Parquet files"
    )
    with start_server(server_dir) as server:
        url = f"{server.url}/{CONTAINER}/{STREAM}"
        console.print(
            f"embedded v3io-compatible stream server on {server.url}; pipeline {config_path} -> {url}"
        )
        asyncio.run(_reset_stream(server.url))
        summary = run_pipeline(
            config_path,
            [
                f"source.path={sample_dir}",
                f"sink.stream={url}",
                f"sink.create.shards={shards}",
                f"sink.dead_letter={state_dir / 'dead.jsonl'}",
                f"checkpoint.path={state_dir / 'events.ckpt'}",
            ],
            progress=None,
        )
        console.print(summary.line())
        found = asyncio.run(_read_back(server.url, shards, rows))
    table = Table(title=f"a few records read back from {CONTAINER}/{STREAM}")
    for col in ("shard", "sequence", "partition key", "data"):
        table.add_column(col)
    for shard, seq, key, data in sorted(found.sample):
        table.add_row(str(shard), str(seq), key, data.decode(errors="replace"))
    console.print(table)
    moved = sum(1 for s in found.shards_of_user.values() if len(s) > 1)
    ok = (
        found.records == rows
        and found.duplicates == 0
        and not found.out_of_order_users
        and moved == 0
        and summary.exit_code == 0
    )
    console.print(
        f"read back {found.records:,} of {rows:,} records: {found.duplicates} duplicates, "
        f"{len(found.out_of_order_users)} users out of order, {moved} users on more than one shard; "
        f"{time.perf_counter() - started:.1f}s in all"
    )
    cmd = shardline_command()
    console.print(
        f"data lives in {server_dir.resolve()}; see it with:\n"
        f"  {cmd} serve --data-dir {server_dir}\n"
        f"  {cmd} stream get http://127.0.0.1:8081/{CONTAINER}/{STREAM} --shard 0 --limit 5",
        soft_wrap=True,
    )
    if not ok:
        raise click.ClickException("the demo did not read back exactly what it wrote")
