"""Resharding while a backfill writes: nothing lost, every key's order kept across the reshard.

The fault proxy holds a PutRecords once part of the data went through, so the writer has a request
in flight while the stream is resharded (SplitShard of every shard on kinesalite, UpdateShardCount
2 -> 4 on kinesis-local); then it lets it go and the rest is written into the children. Read back
parents first, then children (what the KCL does), for every key the first occurrences are in write
order. Few hot keys, so each key has records on both sides of the reshard.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shardline_kinesis.streamtools import (
    create_stream,
    is_open,
    list_shards,
    open_shards,
    split_every_shard,
    wait_open_shards,
)

from .conftest import (
    assert_key_order_across_reshard,
    assert_landed_once_in_key_order,
    boto3_client,
    keyed_records,
    landed,
    parquet_pipeline,
    write_parquet,
)

run_pipeline = pytest.importorskip("shardline.pipeline").run_pipeline

RUN_TIMEOUT_S = 120.0


class _Run:
    """``run_pipeline(config)`` in a thread (no signal handlers there); ``join()`` returns its summary."""

    def __init__(self, config: Path, **options: Any) -> None:
        self.summary: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(config, options), daemon=True)
        self._thread.start()

    def _main(self, config: Path, options: dict[str, Any]) -> None:
        try:
            self.summary = run_pipeline(config, **options)
        except BaseException as exc:
            self.error = exc

    def join(self) -> Any:
        self._thread.join(RUN_TIMEOUT_S)
        assert not self._thread.is_alive(), f"the run did not end within {RUN_TIMEOUT_S:.0f} s"
        if self.error is not None:
            raise self.error
        return self.summary


def _reshard_while_writing(
    emulator: Any,
    make_proxy: Callable[..., Any],
    tmp_path: Path,
    *,
    shards: int,
    rows: int,
    keys: int,
    reshard: Callable[[Any, str], None],
    rate: float = 0.0,
) -> tuple[Any, str, list[tuple[str, bytes]]]:
    proxy = make_proxy(emulator.endpoint_url, rate=rate, seed=3)
    client = boto3_client(emulator.endpoint_url)
    name = emulator.unique_name("reshard")
    create_stream(client, name, shards)
    written = keyed_records(rows, keys, seed=rows)
    write_parquet(tmp_path / "data", written)
    config = parquet_pipeline(
        tmp_path / "p.toml",
        tmp_path / "data",
        emulator.stream_url(name, endpoint_url=proxy.url),
        batch_size=200,
        sink="limits = { max_in_flight_requests = 2, shard_refresh_s = 0.5 }",
    )
    proxy.hold(after_records=rows // 4)
    run = _Run(config)
    try:
        assert proxy.wait_holding(60), "the writer never sent a PutRecords after the first quarter"
        reshard(client, name)
    finally:
        proxy.release()
    summary = run.join()
    assert summary.rows_read == rows and summary.dead_letters == 0 and summary.undelivered == 0
    return client, name, written


def _check(client: Any, name: str, written: list[tuple[str, bytes]], open_before: int) -> None:
    records = landed(client, name)
    assert_landed_once_in_key_order(records, written)
    shards = list_shards(client, name)
    assert_key_order_across_reshard(records, shards)
    closed = {s["ShardId"] for s in shards if not is_open(s)}
    assert len(closed) >= open_before
    on_parents = sum(1 for shard, _, _ in records if shard in closed)
    assert 0 < on_parents < len(records)  # written on both sides of the reshard
    keys_after = {key for shard, key, _ in records if shard not in closed}
    assert keys_after == {key for key, _ in written}  # every key went on writing into a child


def test_split_of_every_shard_while_writing_loses_nothing_and_keeps_key_order(
    kinesalite: Any, fault_proxy: Callable[..., Any], tmp_path: Path
) -> None:
    def split(client: Any, name: str) -> None:
        assert split_every_shard(client, name) == 2
        assert len(open_shards(client, name)) == 4

    client, name, written = _reshard_while_writing(
        kinesalite, fault_proxy, tmp_path, shards=2, rows=1_200, keys=8, reshard=split
    )
    _check(client, name, written, open_before=2)


def test_split_while_writing_with_30_percent_throttling(
    kinesalite: Any, fault_proxy: Callable[..., Any], tmp_path: Path
) -> None:
    client, name, written = _reshard_while_writing(
        kinesalite,
        fault_proxy,
        tmp_path,
        shards=2,
        rows=400,
        keys=8,
        reshard=lambda c, n: split_every_shard(c, n),
        rate=0.3,
    )
    _check(client, name, written, open_before=2)


def test_update_shard_count_2_to_4_while_writing_on_kinesis_local(
    kinesis_local: Any, fault_proxy: Callable[..., Any], tmp_path: Path
) -> None:
    def update(client: Any, name: str) -> None:
        client.update_shard_count(StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
        wait_open_shards(client, name, 4)

    # kinesis-local slows down as a stream grows: a small one
    client, name, written = _reshard_while_writing(
        kinesis_local, fault_proxy, tmp_path, shards=2, rows=400, keys=16, reshard=update
    )
    _check(client, name, written, open_before=2)
