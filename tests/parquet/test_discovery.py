"""One discovery rule for directories and globs: names starting with "." or "_" are not data."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline_parquet import ParquetOptions, ParquetSource
from shardline_parquet.discovery import is_hidden


def _write(path: Path, rows: int, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"seq": list(range(start, start + rows))}), path)


def _rows(path: str | list[str]) -> int:
    source = ParquetSource(ParquetOptions(path=path))
    return sum(batch.num_rows for batch, _ in source.batches())


@pytest.fixture
def spark_output(tmp_path: Path) -> Path:
    """What a Spark job leaves behind: 20 committed rows, a 10-row attempt, markers and checksums."""
    out = tmp_path / "out"
    _write(out / "part-00000-abc.snappy.parquet", 10)
    _write(out / "part-00001-abc.snappy.parquet", 10, start=10)
    _write(
        out / "_temporary" / "0" / "_temporary" / "attempt_202401_0001_m_000000_0" / "part-00000.parquet", 10
    )
    (out / "_SUCCESS").write_text("")
    (out / ".part-00000-abc.snappy.parquet.crc").write_bytes(b"crc")
    return out


def test_a_recursive_glob_over_spark_output_reads_only_the_committed_files(spark_output: Path) -> None:
    assert _rows(str(spark_output / "**" / "*.parquet")) == 20


def test_a_directory_of_spark_output_reads_only_the_committed_files(spark_output: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(spark_output)))
    assert [Path(f).name for f in source.files] == [
        "part-00000-abc.snappy.parquet",
        "part-00001-abc.snappy.parquet",
    ]
    assert _rows(str(spark_output)) == 20


def test_a_delta_table_is_read_without_its_log_checkpoints(tmp_path: Path) -> None:
    table = tmp_path / "delta"
    _write(table / "part-00000-1.c000.snappy.parquet", 5)
    _write(table / "_delta_log" / "00000000000000000010.checkpoint.parquet", 3)
    (table / "_delta_log" / "00000000000000000010.json").write_text("{}")
    (table / "_delta_log" / "_last_checkpoint").write_text("{}")
    assert _rows(str(table)) == 5
    assert _rows(str(table / "**" / "*.parquet")) == 5


def test_hive_directories_whose_key_starts_with_an_underscore_are_data(tmp_path: Path) -> None:
    _write(tmp_path / "t" / "_shard=1" / "part-0.parquet", 4)
    _write(tmp_path / "t" / "_shard=2" / "part-0.parquet", 4)
    source = ParquetSource(ParquetOptions(path=str(tmp_path / "t")))
    assert sum(b.num_rows for b, _ in source.batches()) == 8
    assert source.plan.partition_columns == ["_shard"]


def test_a_hidden_name_you_write_yourself_is_read(spark_output: Path) -> None:
    attempt = spark_output / "_temporary" / "0" / "_temporary" / "*" / "*.parquet"
    assert _rows(str(attempt)) == 10


def test_summary_files_and_copies_in_progress_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "part-0.parquet", 7)
    _write(tmp_path / "_metadata", 7)
    _write(tmp_path / "_common_metadata", 7)
    _write(tmp_path / "part-1.parquet._COPYING_", 7)
    assert _rows(str(tmp_path)) == 7
    assert _rows(str(tmp_path / "*")) == 7


@pytest.mark.parametrize(
    ("name", "directory", "hidden"),
    [
        ("_SUCCESS", False, True),
        ("_temporary", True, True),
        ("_delta_log", True, True),
        (".hive-staging", True, True),
        ("_year=2024", True, False),
        ("year=2024", True, False),
        ("_x=1.parquet", False, True),
        ("part-0.parquet", False, False),
        ("part-0.parquet._COPYING_", False, True),
    ],
)
def test_the_discovery_rule(name: str, directory: bool, hidden: bool) -> None:
    assert is_hidden(name, directory=directory) is hidden


def test_a_glob_matching_a_spark_folder_reads_the_data_files_in_it(
    spark_output: Path, tmp_path: Path
) -> None:
    spark_output.rename(tmp_path / "events.parquet")
    _write(tmp_path / "other.parquet", 3)
    assert _rows(str(tmp_path / "*.parquet")) == 20 + 3
