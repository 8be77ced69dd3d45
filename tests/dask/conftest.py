"""Fixtures of the Dask runner tests: one 2-worker LocalCluster, one server and one dataset per module.

Starting worker processes costs seconds (each imports distributed, pyarrow and shardline), so the
module shares one cluster; each test writes its own stream and checkpoint. The tests reach the
cluster by its scheduler address, as ``--dask tcp://...`` would; ``local:N`` is covered by the CLI
test.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from shardline_parquet import write_sample
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import RunningServer, start_server

ROWS = 1_000_000
FILES = 4
USERS = 1_000
SHARDS = 4


WARM = ("shardline_dask.slot", "shardline_parquet.source", "shardline_v3io")
"""What a slot imports, imported once per worker process so the first test does not pay for it
(by module name: a function of this file would not unpickle on a worker)."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A 2-worker LocalCluster on loopback (processes, one thread each) and a client of it."""
    from distributed import Client, LocalCluster

    scratch = tmp_path_factory.mktemp("dask-scratch")
    local = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        local_directory=str(scratch),
    )
    client = Client(local)
    for module in WARM:
        client.run(importlib.import_module, module)
    try:
        yield client
    finally:
        client.close()
        local.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded v3io-compatible server (a subprocess) for the module; unique stream names."""
    running = start_server(tmp_path_factory.mktemp("stream-data"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 M rows in 4 Parquet files (seq = the row's global number, 1,000 users)."""
    data = tmp_path_factory.mktemp("events")
    write_sample(data, ROWS, files=FILES, row_group_size=50_000, users=USERS, payload_bytes=0)
    return data


def pipeline_file(tmp: Path, data: Path, stream: str, *, split: str = "shards") -> Path:
    """A backfill of ``data`` into ``stream`` (4 shards, keyed by user) with Data = the row's seq."""
    path = tmp / "backfill.toml"
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{data}/*.parquet"
columns = ["seq", "user_id"]

[sink]
stream = "{stream}"
create = {{ shards = {SHARDS} }}

[mapping]
partition_key = "user_id"
data = "template"
template = "{{seq}}"

[checkpoint]
path = "{tmp / "state" / "backfill.ckpt"}"

[engine]
type = "dask"
split = "{split}"
"""
    )
    return path


def slot_rows(checkpoint: Path) -> list[int]:
    """Rows each slot's checkpoint covers (0 for a slot without one yet)."""
    out = []
    for path in sorted(checkpoint.with_name(checkpoint.name + ".dask").glob("slot-*.ckpt")):
        try:
            out.append(int(json.loads(path.read_text())["source"]["rows"]))
        except (ValueError, KeyError, OSError):
            out.append(0)
    return out


@dataclass
class Landed:
    """What a stream holds: how often each seq is there, each key's shards and seqs in stream order."""

    counts: Counter[int]
    shards: dict[str, set[int]]
    order: dict[str, list[int]]

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.counts.values())

    def check(self, rows: int) -> None:
        """Every row at least once, every key on one shard, each key's first occurrences in order."""
        assert set(self.counts) == set(range(rows)), f"{rows - len(self.counts):,} rows missing"
        spread = {k: s for k, s in self.shards.items() if len(s) > 1}
        assert not spread, f"{len(spread)} keys on more than one shard"
        for key, seqs in self.order.items():
            firsts = list(dict.fromkeys(seqs))
            assert firsts == sorted(firsts), f"rows of {key} out of order"


def landed(stream: str) -> Landed:
    counts: Counter[int] = Counter()
    shards: dict[str, set[int]] = defaultdict(set)
    order: dict[str, list[int]] = defaultdict(list)
    for shard, records in read_stream(stream).items():
        for record in records:
            seq = int(record.data)
            counts[seq] += 1
            shards[record.partition_key].add(shard)
            order[record.partition_key].append(seq)
    return Landed(counts, shards, order)
