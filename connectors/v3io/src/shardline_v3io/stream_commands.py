"""``shardline stream create|describe|update|put|get|delete URL``: streams by hand.

URL is ``http(s)://HOST:PORT/CONTAINER/STREAM-PATH``, ``v3io:///CONTAINER/STREAM-PATH`` (endpoint from
env ``V3IO_API``, key from ``V3IO_ACCESS_KEY``) or ``local://DIR/CONTAINER/STREAM-PATH``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import click
import orjson
from shardline import ConfigError, PutRecord, ShardlineError, redact_url

from shardline_v3io.access import StreamAccess, open_access

T = TypeVar("T")

_key_option = click.option(
    "--access-key",
    default=None,
    envvar="V3IO_ACCESS_KEY",
    show_envvar=True,
    help="Access key of the endpoint.",
)


def _run(url: str, access_key: str | None, body: Callable[[StreamAccess], Awaitable[T]]) -> T:
    async def main() -> T:
        access = open_access(url, access_key=access_key)
        try:
            return await body(access)
        finally:
            await access.close()

    return asyncio.run(main())


@click.group(name="stream")
def stream_group() -> None:
    """Create, inspect, write and read streams (v3io Web API, local store, kinesis:// and other
    schemes whose plugin gives a stream access)."""


@stream_group.command(name="create")
@click.argument("url")
@click.option("--shards", type=click.IntRange(1, 4096), default=1, show_default=True, help="Shard count.")
@click.option(
    "--retention-hours",
    type=click.IntRange(1),
    default=24,
    show_default=True,
    help="How long the stream keeps a record, in hours; older records are removed.",
)
@click.option("--if-not-exists", is_flag=True, help="Succeed when the stream already exists.")
@_key_option
def create_command(
    url: str, shards: int, retention_hours: int, if_not_exists: bool, access_key: str | None
) -> None:
    """Create a stream."""
    created = _run(url, access_key, lambda a: a.create(shards, retention_hours))
    if created:
        click.echo(f"created {redact_url(url)}: {shards} shards, retention {retention_hours} h")
    elif if_not_exists:
        click.echo(f"{redact_url(url)} already exists")
    else:
        raise ConfigError(f"stream {redact_url(url)} already exists (use --if-not-exists to accept that)")


@stream_group.command(name="describe")
@click.argument("url")
@_key_option
def describe_command(url: str, access_key: str | None) -> None:
    """Print the stream's shard count and retention as JSON."""
    info = _run(url, access_key, lambda a: a.describe())
    doc: dict[str, Any] = {"url": url, "shards": info.shard_count, "retention_hours": info.retention_hours}
    if info.shards is not None:  # hash-range streams: the open shards and their ranges
        doc["open_shards"] = [
            {"shard_id": s.shard_id, "starting_hash_key": str(s.start), "ending_hash_key": str(s.end)}
            for s in info.shards
        ]
    click.echo(orjson.dumps(doc))


@stream_group.command(name="update")
@click.argument("url")
@click.option(
    "--shards", type=click.IntRange(1, 4096), required=True, help="New shard count (can only grow)."
)
@_key_option
def update_command(url: str, shards: int, access_key: str | None) -> None:
    """Grow a stream's shard count."""
    _run(url, access_key, lambda a: a.update(shards))
    click.echo(f"{redact_url(url)}: {shards} shards")


@stream_group.command(name="delete")
@click.argument("url")
@click.option("--missing-ok", is_flag=True, help="Succeed when the stream does not exist.")
@_key_option
def delete_command(url: str, missing_ok: bool, access_key: str | None) -> None:
    """Delete a stream and everything in its folder."""
    deleted = _run(url, access_key, lambda a: a.delete())
    if deleted:
        click.echo(f"deleted {redact_url(url)}")
    elif missing_ok:
        click.echo(f"{redact_url(url)} does not exist")
    else:
        raise ConfigError(f"stream {redact_url(url)} does not exist")


def _batches(items: Iterable[bytes], size: int = 1000, max_bytes: int = 6 * 2**20) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    nbytes = 0
    for item in items:
        if batch and (len(batch) >= size or nbytes + len(item) > max_bytes):
            yield batch
            batch, nbytes = [], 0
        batch.append(item)
        nbytes += len(item)
    if batch:
        yield batch


def _stdin_lines() -> Iterator[bytes]:
    for line in sys.stdin.buffer:
        yield line.rstrip(b"\r\n")


@stream_group.command(name="put")
@click.argument("url")
@click.argument("data", nargs=-1)
@click.option(
    "--key", "partition_key", default=None, help="PartitionKey of every record (same key -> same shard)."
)
@click.option(
    "--shard", "shard_id", type=click.IntRange(0), default=None, help="Put every record on this shard."
)
@click.option("--client-info", default=None, help="ClientInfo of every record (UTF-8, at most 16 bytes).")
@click.option("-v", "--verbose", is_flag=True, help="Print the shard and sequence number of every record.")
@_key_option
def put_command(
    url: str,
    data: tuple[str, ...],
    partition_key: str | None,
    shard_id: int | None,
    client_info: str | None,
    verbose: bool,
    access_key: str | None,
) -> None:
    """Put records: each DATA argument is one record; without DATA, each line of stdin is one."""
    ci = client_info.encode() if client_info is not None else None
    if ci is not None and len(ci) > 16:
        raise ConfigError(f"--client-info is {len(ci)} bytes; ClientInfo holds at most 16")
    items: Iterable[bytes] = (d.encode() for d in data) if data else _stdin_lines()

    async def body(access: StreamAccess) -> tuple[int, int]:
        written = failed = 0
        index = 0
        for batch in _batches(items):
            records = [
                PutRecord(data=d, partition_key=partition_key, shard_id=shard_id, client_info=ci)
                for d in batch
            ]
            for res in await access.put_records(records):
                if res.ok:
                    written += 1
                    if verbose:
                        click.echo(
                            orjson.dumps(
                                {
                                    "record": index,
                                    "shard": res.shard_id,
                                    "sequence": _json_int(res.sequence_number),
                                }
                            )
                        )
                else:
                    failed += 1
                    detail = f": {res.error_detail}" if res.error_detail else ""
                    click.echo(
                        f"error: record {index}: {res.error_message} ({res.error_code}){detail}", err=True
                    )
                index += 1
        return written, failed

    written, failed = _run(url, access_key, body)
    click.echo(f"put {written} records to {redact_url(url)}" + (f", {failed} failed" if failed else ""))
    if failed:
        sys.exit(1)


def _parse_time(text: str) -> tuple[int, int]:
    try:
        value = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"--time {text!r} is neither epoch seconds nor an ISO 8601 time") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        value = when.timestamp()
    sec = int(value)
    return sec, round((value - sec) * 1e9)


def _json_int(value: int | None) -> int | str | None:
    """A sequence number for JSON: an int, or its decimal text when over 64 bits (Kinesis)."""
    return str(value) if value is not None and value >= 2**63 else value


def _record_json(shard: int, rec: Any) -> bytes:
    doc: dict[str, Any] = {
        "shard": shard,
        "sequence": _json_int(rec.sequence_number),
        "partition_key": rec.partition_key,
        "arrival": dt.datetime.fromtimestamp(rec.arrival_time_sec + rec.arrival_time_nsec / 1e9, dt.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
    }
    if rec.client_info:
        doc["client_info_base64"] = base64.b64encode(rec.client_info).decode()
    try:
        doc["data"] = rec.data.decode("utf-8")
    except UnicodeDecodeError:
        doc["data_base64"] = base64.b64encode(rec.data).decode()
    return orjson.dumps(doc)


@stream_group.command(name="get")
@click.argument("url")
@click.option(
    "--shard", "shards", type=click.IntRange(0), multiple=True, help="Shard(s) to read (default: all)."
)
@click.option(
    "--seek",
    "seek_type",
    type=click.Choice(["earliest", "latest", "sequence", "time"]),
    default=None,
    help="Where each shard is read from: its oldest record, the end (only new records), a "
    "sequence number, or a time [default: sequence with --sequence, time with --time, else earliest].",
)
@click.option(
    "--sequence",
    type=click.IntRange(1),
    default=None,
    help="Start at this sequence number of each shard (implies --seek sequence).",
)
@click.option(
    "--time",
    "time_text",
    default=None,
    help="Start at the first record that arrived at or after this time, epoch seconds or ISO 8601 "
    "(implies --seek time).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Stop after this many records.")
@click.option("--follow", is_flag=True, help="Keep polling for new records until interrupted.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.01),
    default=0.5,
    show_default=True,
    help="Seconds to wait between reads of a shard that had no new record (with --follow).",
)
@_key_option
def get_command(
    url: str,
    shards: tuple[int, ...],
    seek_type: str | None,
    sequence: int | None,
    time_text: str | None,
    limit: int | None,
    follow: bool,
    poll_interval: float,
    access_key: str | None,
) -> None:
    """Print records as JSON lines: shard, sequence, partition_key, arrival, data (or data_base64)."""
    if sequence is not None and time_text is not None:
        raise ConfigError("--sequence and --time both say where to start: give one of them")
    implied = "sequence" if sequence is not None else "time" if time_text is not None else None
    if seek_type is not None and implied is not None and seek_type != implied:
        given = "--sequence" if implied == "sequence" else "--time"
        raise ConfigError(f"{given} starts at a {implied}, not at --seek {seek_type}: drop one of the two")
    seek_type = seek_type or implied or "earliest"
    if seek_type == "sequence" and sequence is None:
        raise ConfigError("--seek sequence needs --sequence N")
    if seek_type == "time" and time_text is None:
        raise ConfigError("--seek time needs --time (epoch seconds or ISO 8601)")
    ts = _parse_time(time_text) if time_text is not None else (None, 0)

    async def body(access: StreamAccess) -> int:
        info = await access.describe()
        readable_shards = getattr(access, "readable_shards", None)  # closed shards too (Kinesis)
        numbers = await readable_shards() if readable_shards else list(range(info.shard_count))
        wanted = list(shards) or numbers
        for s in wanted:
            if s not in numbers:
                raise ConfigError(
                    f"--shard {s}: the stream has shards {numbers[0]}..{numbers[-1]}"
                    if readable_shards
                    else f"--shard {s}: the stream has {info.shard_count} shards (0..{info.shard_count - 1})"
                )
        locations = {
            s: await access.seek(
                s, seek_type.upper(), sequence_number=sequence, timestamp_sec=ts[0], timestamp_nsec=ts[1]
            )
            for s in wanted
        }
        printed = 0
        active = set(wanted)
        while active:
            progressed = False
            for s in wanted:
                if s not in active:
                    continue
                want = 1000 if limit is None else min(1000, limit - printed)
                result = await access.get_records(s, locations[s], want)
                locations[s] = result.next_location
                for rec in result.records:
                    click.echo(_record_json(s, rec))
                    printed += 1
                progressed = progressed or bool(result.records)
                if limit is not None and printed >= limit:
                    return printed
                if result.records_behind_latest == 0 and not follow:
                    active.discard(s)
            if follow and not progressed:
                await asyncio.sleep(poll_interval)
        return printed

    try:
        _run(url, access_key, body)
    except KeyboardInterrupt:
        pass
    except ShardlineError:
        raise
