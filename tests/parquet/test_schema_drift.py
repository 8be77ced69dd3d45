"""Files of one source need not share a schema: one schema from every footer, checked before sending."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline.errors import SchemaError
from shardline_parquet import ParquetOptions, ParquetSource
from shardline_v3io.testing_server import RunningServer

from .conftest import shardline, stream_rows, write_pipeline


@pytest.fixture
def dropped(tmp_path: Path) -> Path:
    """``dropped/``: part-0 = {user_id, coupon}, part-1 = {user_id} (the coupon column was dropped)."""
    directory = tmp_path / "dropped"
    directory.mkdir()
    part0 = pa.table({"user_id": ["a", "b", "c"], "coupon": [10, None, 30]})
    pq.write_table(part0, directory / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ["d", "e"]}), directory / "part-1.parquet")
    return directory


def _read(source: ParquetSource) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for batch, token in source.batches():
        rows.extend(batch.to_pylist())
        source.ack(token)
    return rows


def test_a_column_missing_from_a_file_reads_as_null(dropped: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(dropped), columns=["user_id", "coupon"]))
    assert _read(source) == [
        {"user_id": "a", "coupon": 10},
        {"user_id": "b", "coupon": None},
        {"user_id": "c", "coupon": 30},
        {"user_id": "d", "coupon": None},
        {"user_id": "e", "coupon": None},
    ]


def test_the_unified_schema_keeps_the_type_other_files_give_the_column(dropped: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(dropped)))
    assert source.plan.schema == pa.schema([("user_id", pa.string()), ("coupon", pa.int64())])
    assert [b.schema.field("coupon").type for b, _ in source.batches()] == [pa.int64(), pa.int64()]


def test_a_filter_on_a_column_some_files_lack_treats_it_as_null(dropped: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(dropped), filter="coupon is None"))
    assert [r["user_id"] for r in _read(source)] == ["b", "d", "e"]


def test_a_filter_comparing_a_missing_column_keeps_no_row_of_that_file(dropped: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(dropped), filter="coupon >= 20"))
    assert _read(source) == [{"user_id": "c", "coupon": 30}]


def test_a_type_conflict_between_files_names_both_files_the_column_and_both_types(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["a"], "coupon": [10]}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ["b"], "coupon": ["TEN"]}), tmp_path / "part-1.parquet")
    with pytest.raises(SchemaError) as caught:
        ParquetSource(ParquetOptions(path=str(tmp_path)))
    assert str(caught.value) == (
        f"source.path: column 'coupon' is int64 in {tmp_path / 'part-0.parquet'} but string in "
        f"{tmp_path / 'part-1.parquet'}; the files of one source must agree on a column's type "
        "(rewrite one of them, or read them as separate sources)"
    )


def test_an_all_null_column_takes_the_type_of_the_other_files(tmp_path: Path) -> None:
    pq.write_table(pa.table({"k": ["a"], "v": pa.nulls(1)}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"k": ["b"], "v": pa.array([2.5])}), tmp_path / "part-1.parquet")
    source = ParquetSource(ParquetOptions(path=str(tmp_path)))
    assert source.plan.schema.field("v").type == pa.float64()
    assert _read(source) == [{"k": "a", "v": None}, {"k": "b", "v": 2.5}]


def test_dictionary_and_plain_columns_of_one_value_type_agree(tmp_path: Path) -> None:
    pq.write_table(pa.table({"k": pa.array(["x", "y"]).dictionary_encode()}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"k": ["z"]}), tmp_path / "part-1.parquet")
    source = ParquetSource(ParquetOptions(path=str(tmp_path)))
    assert source.plan.schema.field("k").type == pa.string()
    assert [r["k"] for r in _read(source)] == ["x", "y", "z"]


def test_every_footer_is_checked_before_the_first_batch(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["a"], "coupon": [1]}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"user_id": ["b"], "coupon": [1.5]}), tmp_path / "part-9.parquet")
    with pytest.raises(SchemaError, match=r"'coupon' is int64 in .*part-0\.parquet but double in .*part-9"):
        ParquetSource(ParquetOptions(path=str(tmp_path)))  # raised when made: nothing was read yet


def test_the_dropped_directory_backfills_every_row_into_the_server(
    dropped: Path, tmp_path: Path, server: RunningServer
) -> None:
    stream = f"{server.url}/bigdata/dropped-columns"
    pipeline = write_pipeline(tmp_path, {"path": str(dropped), "columns": ["user_id", "coupon"]}, stream)
    result = shardline("run", str(pipeline))
    assert result.exit_code == 0, result.err
    assert stream_rows(stream) == [
        {"coupon": 10, "user_id": "a"},
        {"coupon": 30, "user_id": "c"},
        {"coupon": None, "user_id": "b"},
        {"coupon": None, "user_id": "d"},
        {"coupon": None, "user_id": "e"},
    ]
    checkpoint = json.loads(Path(str(pipeline) + ".ckpt").read_text())["source"]
    assert checkpoint["rows"] == 5
    assert checkpoint["file"] == str(dropped / "part-1.parquet")


def test_the_dropped_directory_with_a_null_filter_sends_the_null_rows(
    dropped: Path, tmp_path: Path, server: RunningServer
) -> None:
    stream = f"{server.url}/bigdata/dropped-filter"
    pipeline = write_pipeline(tmp_path, {"path": str(dropped), "filter": "coupon is None"}, stream)
    result = shardline("run", str(pipeline))
    assert result.exit_code == 0, result.err
    assert stream_rows(stream) == [
        {"coupon": None, "user_id": "b"},
        {"coupon": None, "user_id": "d"},
        {"coupon": None, "user_id": "e"},
    ]


def test_files_of_different_schemas_conform_to_the_resume_contract(dropped: Path) -> None:
    from shardline.testing import check_source

    facts = check_source(ParquetSource, {"path": str(dropped), "batch_size": 2}, resume_after=(1, 2, 3))
    assert facts["rows"] == 5
