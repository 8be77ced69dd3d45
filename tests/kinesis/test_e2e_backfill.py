"""A Parquet backfill into kinesalite, through the real ``kinesis://`` transport, read back with GetRecords.

Every record lands once, byte for byte (binary payloads that are not UTF-8), under its key, and
for every key the first occurrences in stream order are its write order; the same when 30% of
the records are throttled by the fault proxy (dropped before they reach the emulator, answered
``ProvisionedThroughputExceededException``), in both shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shardline_kinesis.streamtools import create_stream

from .conftest import (
    assert_landed_once_in_key_order,
    boto3_client,
    keyed_records,
    landed,
    parquet_pipeline,
    write_parquet,
)

run_pipeline = pytest.importorskip("shardline.pipeline").run_pipeline


def _backfill(
    tmp_path: Path, stream_url: str, rows: int, keys: int, **run: Any
) -> tuple[Any, list[tuple[str, bytes]]]:
    written = keyed_records(rows, keys, seed=rows + keys)
    write_parquet(tmp_path / "data", written)
    config = parquet_pipeline(tmp_path / "backfill.toml", tmp_path / "data", stream_url)
    summary = run_pipeline(config, **run)
    assert summary.rows_read == rows and summary.dead_letters == 0 and summary.undelivered == 0
    return summary, written


def test_parquet_backfill_lands_every_record_once_in_key_order(kinesalite: Any, tmp_path: Path) -> None:
    client = boto3_client(kinesalite.endpoint_url)
    name = kinesalite.unique_name("backfill")
    create_stream(client, name, 4)
    _, written = _backfill(tmp_path, kinesalite.stream_url(name), rows=2_000, keys=100)
    records = landed(client, name)
    assert_landed_once_in_key_order(records, written)
    assert len({shard for shard, _, _ in records}) == 4  # the keys spread over every shard


@pytest.mark.parametrize("shape", ["random", "tail"])
def test_parquet_backfill_with_30_percent_throttling_loses_nothing_and_keeps_key_order(
    kinesalite: Any, fault_proxy: Callable[..., Any], tmp_path: Path, shape: str
) -> None:
    rows = 1_000
    proxy = fault_proxy(kinesalite.endpoint_url, rate=0.3, shape=shape, seed=5)
    client = boto3_client(kinesalite.endpoint_url)
    name = kinesalite.unique_name("throttled")
    create_stream(client, name, 4)
    url = kinesalite.stream_url(name, endpoint_url=proxy.url)
    summary, written = _backfill(tmp_path, url, rows, keys=100)
    assert proxy.stats.injected >= 0.3 * rows  # the faults were real (30% of first tries, and of retries)
    assert summary.retries > 0
    assert_landed_once_in_key_order(landed(client, name), written)
