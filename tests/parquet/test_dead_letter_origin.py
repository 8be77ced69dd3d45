"""A dead-lettered Parquet row says where it came from: file, row group, row (and row of the file)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline_v3io.testing_server import RunningServer

from .conftest import shardline, stream_rows, write_pipeline


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """One file, 3 row groups of 100 rows; row 38 of row group 2 (row 238) is too large to send."""
    n = 300
    payload = ["ok"] * n
    payload[238] = "x" * 1_100_000
    table = pa.table({"seq": list(range(n)), "keep": [i % 3 != 0 for i in range(n)], "payload": payload})
    directory = tmp_path / "data" / "year=2024"
    directory.mkdir(parents=True)
    pq.write_table(table, directory / "part-0.parquet", row_group_size=100)
    return tmp_path / "data"


@pytest.mark.parametrize("target", ["dead.jsonl", "dead.parquet"])
def test_a_dead_letter_names_the_file_row_group_and_row_it_came_from(
    data: Path, tmp_path: Path, server: RunningServer, target: str
) -> None:
    stream = f"{server.url}/bigdata/dead-origin-{target.replace('.', '-')}"
    source = {
        "path": str(data),
        "filter": "keep",
        "batch_size": 16,
    }  # the filter makes batch rows != file rows
    pipeline = write_pipeline(tmp_path, source, stream, dead_letter=str(tmp_path / target))
    result = shardline("run", str(pipeline), "--allow-dead-letters")
    assert result.exit_code == 0, result.err
    if target.endswith(".jsonl"):
        [entry] = [json.loads(line) for line in (tmp_path / target).read_text().splitlines()]
        origin = entry["origin"]
    else:
        [entry] = pq.read_table(tmp_path / target).to_pylist()
        origin = json.loads(entry["origin"])
    assert origin == {
        "file": str(data / "year=2024" / "part-0.parquet"),
        "row_group": 2,
        "row": 38,
        "file_row": 238,
    }
    assert entry["error"] == "Data is 1100048 bytes; the limit is 1048576 bytes"
    assert len(stream_rows(stream)) == 200 - 1  # the 200 rows the filter keeps, but the dead one
