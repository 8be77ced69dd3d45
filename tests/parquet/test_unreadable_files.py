"""No pyarrow exception reaches a user: every unreadable file is a one-line error naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline.errors import ConfigError, ShardlineError
from shardline_parquet import ParquetOptions, ParquetSource
from shardline_parquet.plan import ParquetFileError
from shardline_v3io.testing_server import RunningServer

from .conftest import shardline, write_pipeline


def _good(path: Path, rows: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"k": [f"k{i}" for i in range(rows)], "v": list(range(rows))}), path)
    return path


def test_a_file_that_is_not_parquet_is_named_with_what_to_do(tmp_path: Path) -> None:
    _good(tmp_path / "part-0.parquet")
    (tmp_path / "notes.txt").write_text("not parquet at all, but long enough to have a footer\n" * 3)
    with pytest.raises(ParquetFileError) as caught:
        ParquetSource(ParquetOptions(path=str(tmp_path)))
    message = str(caught.value)
    expected = f"source.path: {tmp_path / 'notes.txt'} is not a Parquet file (or is truncated)"
    assert message.startswith(expected)
    assert message.endswith("remove it or narrow source.path to the Parquet files (e.g. 'dir/**/*.parquet')")
    assert "\n" not in message


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    path = _good(tmp_path / "part-0.parquet")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ParquetFileError, match=r"part-0.parquet is not a Parquet file \(or is truncated\)"):
        ParquetSource(ParquetOptions(path=str(path)))


def test_an_empty_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "part-0.parquet").write_bytes(b"")
    with pytest.raises(ParquetFileError, match=r"part-0\.parquet is not a Parquet file"):
        ParquetSource(ParquetOptions(path=str(tmp_path)))


def test_a_corrupt_page_behind_a_good_footer_is_named_with_its_row_group(tmp_path: Path) -> None:
    path = tmp_path / "part-0.parquet"
    table = pa.table({"v": list(range(10_000))})
    pq.write_table(table, path, row_group_size=5_000, compression="snappy")
    offset = pq.read_metadata(path).row_group(1).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64  # the page header of row group 1
    path.write_bytes(bytes(data))
    source = ParquetSource(ParquetOptions(path=str(path), batch_size=1_000))  # the footer is fine
    rows = 0
    with pytest.raises(ParquetFileError) as caught:
        for batch, token in source.batches():
            rows += batch.num_rows
            source.ack(token)
    assert rows == 5_000  # row group 0 was read and acknowledged
    assert str(caught.value).startswith(f"source.path: cannot read row group 1 of {path}: ")
    assert str(caught.value).endswith("the file may be corrupt (rewrite it or leave it out)")
    assert source.checkpoint()["row_group"] == 1  # a run after the file is fixed resumes there


def test_a_file_removed_after_planning_is_named(tmp_path: Path) -> None:
    path = _good(tmp_path / "part-0.parquet")
    source = ParquetSource(ParquetOptions(path=str(tmp_path)))
    path.unlink()
    with pytest.raises(ShardlineError, match=r"part-0\.parquet"):
        next(iter(source.batches()))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_a_file_without_read_permission_is_named(tmp_path: Path) -> None:
    path = _good(tmp_path / "part-0.parquet")
    path.chmod(0)
    try:
        with pytest.raises(ParquetFileError, match=r"permission denied; grant read access"):
            ParquetSource(ParquetOptions(path=str(tmp_path)))
    finally:
        path.chmod(0o644)


def test_a_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        ParquetSource(ParquetOptions(path=str(tmp_path / "nope")))
    assert str(caught.value) == f"source.path: no such file or directory: {str(tmp_path / 'nope')!r}"


def test_run_prints_one_line_and_sends_nothing_for_a_file_that_is_not_parquet(
    tmp_path: Path, server: RunningServer
) -> None:
    data = tmp_path / "data"
    _good(data / "part-0.parquet")
    (data / "part-1.parquet").write_text("PAR1 this is text\n")
    stream = f"{server.url}/bigdata/not-parquet"
    pipeline = write_pipeline(tmp_path, {"path": str(data)}, stream)
    result = shardline("run", str(pipeline))
    assert result.exit_code == 1
    assert len(result.err) == 1
    expected = f"error: {pipeline}: source.path: {data / 'part-1.parquet'} is not a Parquet file"
    assert result.err[0].startswith(expected)
    assert "Traceback" not in "\n".join(result.out + result.err)
    from shardline.errors import StreamNotFoundError
    from shardline_v3io.testing import read_stream

    with pytest.raises(StreamNotFoundError):
        read_stream(stream)  # the run stopped before it even created the stream
