"""Partitioned datasets keep their partition columns: in batches, keys, projections, filters, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline.errors import ConfigError, SchemaError
from shardline.testing import check_source
from shardline_parquet import ParquetOptions, ParquetSource
from shardline_v3io.testing_server import RunningServer

from .conftest import shardline, stream_records, write_pipeline

EVENTS = pa.table(
    {
        "user_id": ["u1", "u2", "u3", "u4", "u5", "u6"],
        "amount": [1, 2, 3, 4, 5, 6],
        "year": [2023, 2024, 2024, 2025, 2023, 2024],
    }
)


@pytest.fixture
def events(tmp_path: Path) -> Path:
    """``events/year=2023/…``, ``year=2024/…``, ``year=2025/…`` as pyarrow (and Spark, Hive) write them."""
    pq.write_to_dataset(EVENTS, tmp_path / "events", partition_cols=["year"])
    return tmp_path / "events"


def _read(source: ParquetSource) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch, token in source.batches():
        rows.extend(batch.to_pylist())
        source.ack(token)
    return sorted(rows, key=lambda r: str(r.get("user_id", r.get("k"))))


def test_hive_partition_columns_become_columns_of_every_batch(events: Path) -> None:
    rows = _read(ParquetSource(ParquetOptions(path=str(events))))
    assert rows == EVENTS.to_pylist()


def test_partition_columns_come_after_the_files_columns_as_int64_when_every_value_is_an_integer(
    events: Path,
) -> None:
    source = ParquetSource(ParquetOptions(path=str(events)))
    assert source.plan.schema == pa.schema(
        [("user_id", pa.string()), ("amount", pa.int64()), ("year", pa.int64())]
    )


def test_a_glob_below_the_root_keeps_the_partition_columns(events: Path) -> None:
    rows = _read(ParquetSource(ParquetOptions(path=str(events / "**" / "*.parquet"))))
    assert [r["year"] for r in rows] == [2023, 2024, 2024, 2025, 2023, 2024]


def test_partition_columns_can_be_projected(events: Path) -> None:
    rows = _read(ParquetSource(ParquetOptions(path=str(events), columns=["year", "user_id"])))
    assert rows[0] == {"year": 2023, "user_id": "u1"}
    assert list(rows[0]) == ["year", "user_id"]


def test_a_filter_on_a_partition_column_prunes_whole_directories(
    events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shardline_parquet.source as source_module

    opened: list[str] = []
    original = source_module.pq.ParquetFile

    def spy(path: str, **kwargs: Any) -> Any:
        opened.append(Path(path).parent.name)
        return original(path, **kwargs)

    monkeypatch.setattr(source_module.pq, "ParquetFile", spy)
    rows = _read(ParquetSource(ParquetOptions(path=str(events), filter="year == 2024 and amount > 2")))
    assert [r["user_id"] for r in rows] == ["u3", "u6"]
    assert set(opened) == {"year=2024"}  # the data of year=2023 and year=2025 is never read


def test_a_partition_column_is_a_partition_key_in_a_run(
    events: Path, tmp_path: Path, server: RunningServer
) -> None:
    stream = f"{server.url}/bigdata/partitioned-by-year"
    pipeline = write_pipeline(tmp_path, {"path": str(events)}, stream, mapping={"partition_key": "year"})
    result = shardline("run", str(pipeline))
    assert result.exit_code == 0, result.err
    records = sorted(stream_records(stream), key=lambda r: r[1]["user_id"])
    assert [(key, row["user_id"], row["year"]) for key, row in records] == [
        ("2023", "u1", 2023),
        ("2024", "u2", 2024),
        ("2024", "u3", 2024),
        ("2025", "u4", 2025),
        ("2023", "u5", 2023),
        ("2024", "u6", 2024),
    ]


def test_checkpoints_name_the_file_below_the_root_and_its_partition_values(events: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(events), batch_size=1))
    _batch, token = next(iter(source.batches()))
    source.ack(token)
    state = source.checkpoint()
    assert state["relative"].startswith("year=2023/") and state["relative"].endswith(".parquet")
    assert state["partition"] == {"year": 2023}
    assert (state["row_group"], state["row_offset"], state["rows"]) == (0, 1, 1)
    resumed = _read(ParquetSource(ParquetOptions(path=str(events)), checkpoint=json.loads(json.dumps(state))))
    assert [r["user_id"] for r in resumed] == ["u2", "u3", "u4", "u5", "u6"]


def test_a_partitioned_source_with_a_filter_conforms_to_the_resume_contract(tmp_path: Path) -> None:
    n = 3_000
    table = pa.table({"seq": list(range(n)), "day": [f"2024-01-0{1 + i % 3}" for i in range(n)]})
    pq.write_to_dataset(table, tmp_path / "days", partition_cols=["day"], row_group_size=250)
    options = {
        "path": str(tmp_path / "days"),
        "batch_size": 70,
        "filter": "day != '2024-01-02' and seq >= 100",
    }
    facts = check_source(ParquetSource, options, resume_after=(1, 5, 13))
    assert facts["rows"] == len([i for i in range(100, n) if i % 3 != 1])


def test_hive_values_are_uri_decoded_and_the_hive_null_is_null(tmp_path: Path) -> None:
    table = pa.table({"k": ["a", "b", "c"], "city": ["São Paulo", "x/y", None]})
    pq.write_to_dataset(table, tmp_path / "cities", partition_cols=["city"])
    rows = _read(ParquetSource(ParquetOptions(path=str(tmp_path / "cities"))))
    assert rows == [{"k": "a", "city": "São Paulo"}, {"k": "b", "city": "x/y"}, {"k": "c", "city": None}]


def test_a_list_of_names_reads_directory_partitioning(tmp_path: Path) -> None:
    for year, month, k in [("2024", "01", "a"), ("2024", "02", "b"), ("2025", "01", "c")]:
        (tmp_path / "events" / year / month).mkdir(parents=True)
        pq.write_table(pa.table({"k": [k]}), tmp_path / "events" / year / month / "part-0.parquet")
    source = ParquetSource(ParquetOptions(path=str(tmp_path / "events"), partitioning=["year", "month"]))
    assert _read(source) == [
        {"k": "a", "year": 2024, "month": 1},
        {"k": "b", "year": 2024, "month": 2},
        {"k": "c", "year": 2025, "month": 1},
    ]


def test_directory_partitioning_refuses_a_file_too_shallow_for_its_names(tmp_path: Path) -> None:
    (tmp_path / "events" / "2024").mkdir(parents=True)
    pq.write_table(pa.table({"k": ["a"]}), tmp_path / "events" / "2024" / "part-0.parquet")
    with pytest.raises(ConfigError, match=r"is 1 directories below its root, but the partitioning names 2"):
        ParquetSource(ParquetOptions(path=str(tmp_path / "events"), partitioning=["year", "month"]))


def test_partitioning_none_keeps_directories_out_of_the_columns(events: Path) -> None:
    rows = _read(ParquetSource(ParquetOptions(path=str(events), partitioning="none")))
    assert rows[0] == {"user_id": "u1", "amount": 1}


def test_a_partition_column_that_is_also_a_file_column_is_refused(tmp_path: Path) -> None:
    (tmp_path / "events" / "year=2024").mkdir(parents=True)
    pq.write_table(pa.table({"year": [2024]}), tmp_path / "events" / "year=2024" / "part-0.parquet")
    with pytest.raises(SchemaError, match=r"'year' is both a partition directory .* partitioning = \"none\""):
        ParquetSource(ParquetOptions(path=str(tmp_path / "events")))


def test_a_checkpoint_resumes_by_the_path_below_the_root_when_the_dataset_moved(
    events: Path, tmp_path: Path
) -> None:
    source = ParquetSource(ParquetOptions(path=str(events), batch_size=1))
    iterator = iter(source.batches())
    for _ in range(3):  # u1 and u5 (year=2023), then u2 (year=2024)
        _batch, token = next(iterator)
        source.ack(token)
    state = source.checkpoint()
    moved = events.rename(tmp_path / "moved")
    resumed = ParquetSource(ParquetOptions(path=str(moved)), checkpoint=state)
    assert [r["user_id"] for r in _read(resumed)] == ["u3", "u4", "u6"]


def test_a_stopped_backfill_of_a_partitioned_dataset_resumes_without_a_gap(
    tmp_path: Path, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardline.config import load_pipeline
    from shardline.pipeline import Runner

    n = 2_000
    table = pa.table({"seq": list(range(n)), "region": [["eu", "us", "ap"][i % 3] for i in range(n)]})
    pq.write_to_dataset(table, tmp_path / "sales", partition_cols=["region"], row_group_size=300)
    stream = f"{server.url}/bigdata/partitioned-resume"
    source = {"path": str(tmp_path / "sales"), "batch_size": 100, "filter": "region != 'us'"}
    pipeline = write_pipeline(tmp_path, source, stream, mapping={"partition_key": "region"})
    runner: Runner | None = None
    original = ParquetSource.batches

    def stop_after_five(self: ParquetSource) -> Any:
        for i, item in enumerate(original(self)):
            yield item
            if i == 4 and runner is not None:
                runner.stop("SIGTERM")

    monkeypatch.setattr(ParquetSource, "batches", stop_after_five)
    runner = Runner(load_pipeline(pipeline))
    first = runner.run()
    assert first.stopped_by == "SIGTERM" and 0 < first.rows_acked < n
    checkpoint = json.loads(Path(str(pipeline) + ".ckpt").read_text())["source"]
    assert checkpoint["partition"] == {"region": "ap"} and checkpoint["relative"].startswith("region=ap/")
    monkeypatch.setattr(ParquetSource, "batches", original)
    second = Runner(load_pipeline(pipeline)).run()
    assert first.rows_acked + second.rows_acked == len([i for i in range(n) if i % 3 != 1])
    records = stream_records(stream)
    assert sorted(row["seq"] for _, row in records) == [i for i in range(n) if i % 3 != 1]  # once each
    assert all(key == row["region"] for key, row in records)
