"""``shardline validate`` opens the files and refuses what ``run`` refuses, with the same one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline.errors import StreamNotFoundError
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import RunningServer

from .conftest import shardline, write_pipeline


def _users(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": ["a", "b"]}), root / "part-0.parquet")
    return root


def _missing_path(d: Path) -> tuple[dict[str, Any], str]:
    return {"path": str(d / "nope")}, f"source.path: no such file or directory: {str(d / 'nope')!r}"


def _empty_glob(d: Path) -> tuple[dict[str, Any], str]:
    _users(d / "data")
    pattern = str(d / "data" / "*.parq")
    return {
        "path": pattern
    }, f"source.path: {pattern!r} matches no files (names starting with '.' or '_' are skipped)"


def _empty_directory(d: Path) -> tuple[dict[str, Any], str]:
    (d / "data" / "_temporary").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["a"]}), d / "data" / "_temporary" / "part-0.parquet")
    expected = (
        f"source.path: directory {str(d / 'data')!r} holds no data files "
        "(names starting with '.' or '_' are skipped)"
    )
    return {"path": str(d / "data")}, expected


def _filter_on_a_missing_column(d: Path) -> tuple[dict[str, Any], str]:
    expected = (
        "source.filter = 'coupon is None': 'coupon' is in none of the 1 files of source.path "
        "(their columns: user_id)"
    )
    return {"path": str(_users(d / "data")), "filter": "coupon is None"}, expected


def _dnf_filter_on_a_missing_column(d: Path) -> tuple[dict[str, Any], str]:
    expected = (
        "source.filter = [['coupon', '>', 1]]: 'coupon' is in none of the 1 files of source.path "
        "(their columns: user_id)"
    )
    return {"path": str(_users(d / "data")), "filter": [["coupon", ">", 1]]}, expected


def _a_missing_column(d: Path) -> tuple[dict[str, Any], str]:
    expected = (
        "source.columns: 'coupon', 'seq' are in none of the 1 files of source.path (their columns: user_id)"
    )
    return {"path": str(_users(d / "data")), "columns": ["user_id", "coupon", "seq"]}, expected


def _a_filter_of_the_wrong_type(d: Path) -> tuple[dict[str, Any], str]:
    expected = (
        "source.filter = 'user_id > 3' does not fit the columns' types: Function 'greater' has no kernel "
        "matching input types (string, int8) (columns: user_id: string)"
    )
    return {"path": str(_users(d / "data")), "filter": "user_id > 3"}, expected


def _a_type_conflict(d: Path) -> tuple[dict[str, Any], str]:
    data = _users(d / "data")
    pq.write_table(pa.table({"user_id": [1]}), data / "part-1.parquet")
    expected = (
        f"source.path: column 'user_id' is string in {data / 'part-0.parquet'} but int64 in "
        f"{data / 'part-1.parquet'}; the files of one source must agree on a column's type "
        "(rewrite one of them, or read them as separate sources)"
    )
    return {"path": str(data)}, expected


def _a_file_that_is_not_parquet(d: Path) -> tuple[dict[str, Any], str]:
    data = _users(d / "data")
    (data / "part-1.parquet").write_text("hello")
    expected = (
        f"source.path: {data / 'part-1.parquet'} is not a Parquet file (or is truncated): Parquet file size "
        "is 5 bytes, smaller than the minimum file footer (8 bytes); remove it or narrow source.path to the "
        "Parquet files (e.g. 'dir/**/*.parquet')"
    )
    return {"path": str(data)}, expected


CASES: list[Callable[[Path], tuple[dict[str, Any], str]]] = [
    _missing_path,
    _empty_glob,
    _empty_directory,
    _filter_on_a_missing_column,
    _dnf_filter_on_a_missing_column,
    _a_missing_column,
    _a_filter_of_the_wrong_type,
    _a_type_conflict,
    _a_file_that_is_not_parquet,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_validate_and_run_give_the_same_one_line_error_and_run_sends_nothing(
    case: Callable[[Path], tuple[dict[str, Any], str]], tmp_path: Path, server: RunningServer
) -> None:
    source, expected = case(tmp_path)
    stream = f"{server.url}/bigdata/validate-{case.__name__.strip('_').replace('_', '-')}"
    pipeline = write_pipeline(tmp_path, source, stream)
    validated = shardline("validate", str(pipeline))
    assert (validated.exit_code, validated.err) == (1, [f"error: {pipeline}: {expected}"])
    ran = shardline("run", str(pipeline))
    assert (ran.exit_code, ran.err) == (1, [f"error: {pipeline}: {expected}"])  # naming the file
    with pytest.raises(StreamNotFoundError):
        read_stream(stream)  # refused before the stream was even created


def test_validate_says_ok_with_what_the_files_hold(tmp_path: Path) -> None:
    pq.write_to_dataset(
        pa.table({"user_id": ["a", "b", "c"], "year": [2024, 2024, 2025]}),
        tmp_path / "events",
        partition_cols=["year"],
    )
    pipeline = write_pipeline(tmp_path, {"path": str(tmp_path / "events")}, "http://127.0.0.1:1/bigdata/x")
    result = shardline("validate", str(pipeline))
    assert result.exit_code == 0, result.err
    assert result.out[0].startswith(f"{pipeline}: ok: parquet source -> http://127.0.0.1:1/bigdata/x")
    assert result.out[1] == "  source: 2 files; 3 rows; columns user_id, year; partition columns year"
