"""The Parquet source against real Parquet files: conformance, projection, filters, globs, directories."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from shardline.errors import CheckpointError, ConfigError, SchemaError
from shardline.testing import check_source
from shardline_parquet import ParquetOptions, ParquetSource, write_sample
from shardline_parquet.filters import FilterSyntaxError, compile_filter


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 files, 12,000 rows, row groups of 1,500 rows (8 per file... and a short last one)."""
    directory = tmp_path_factory.mktemp("events")
    write_sample(directory, 12_000, files=3, row_group_size=1_500, users=50)
    return directory


def _read_all(source: ParquetSource) -> pa.Table:
    batches = []
    for batch, token in source.batches():
        batches.append(batch)
        source.ack(token)
    return pa.Table.from_batches(batches)


def test_conforms_to_the_source_contract(events: Path) -> None:
    facts = check_source(ParquetSource, {"path": str(events), "batch_size": 700})
    assert facts["rows"] == 12_000
    assert facts["batches"] > 12


def test_conforms_with_a_filter_and_projection(events: Path) -> None:
    options = {
        "path": str(events),
        "batch_size": 400,
        "columns": ["seq", "user_id"],
        "filter": "amount >= 50",
    }
    facts = check_source(ParquetSource, options, resume_after=(1, 3, 7, 15))
    assert 0 < facts["rows"] < 12_000


def test_reads_every_row_in_file_and_row_order(events: Path) -> None:
    table = _read_all(ParquetSource(ParquetOptions(path=str(events), batch_size=1000)))
    assert table.column("seq").to_pylist() == list(range(12_000))


def test_batches_never_cross_a_row_group_or_exceed_batch_size(events: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(events), batch_size=1000))
    for batch, token in source.batches():
        assert batch.num_rows <= 1000
        assert token.row_offset <= 1500
        source.ack(token)
    assert source.checkpoint()["rows"] == 12_000


def test_projection_keeps_only_the_named_columns(events: Path) -> None:
    table = _read_all(ParquetSource(ParquetOptions(path=str(events), columns=["user_id", "seq"])))
    assert table.column_names == ["user_id", "seq"]
    assert table.num_rows == 12_000


def test_a_missing_column_is_a_schema_error_naming_it(events: Path) -> None:
    with pytest.raises(SchemaError, match=r"source\.columns: 'nope' is in none of the 3 files"):
        ParquetSource(ParquetOptions(path=str(events), columns=["seq", "nope"]))


def test_expression_filter_matches_pyarrow(events: Path) -> None:
    expected = pq.read_table(events).filter((pc.field("kind") == "click") & (pc.field("amount") > 50))
    table = _read_all(
        ParquetSource(
            ParquetOptions(path=str(events), filter="kind == 'click' and amount > 50", columns=["seq"])
        )
    )
    assert table.column("seq").to_pylist() == expected.column("seq").to_pylist()
    assert 0 < table.num_rows < 12_000


def test_filter_syntax_covers_in_not_chains_and_null_checks(events: Path) -> None:
    full = pq.read_table(events)
    cases = {
        "kind in ('cart', 'purchase')": pc.is_in(full["kind"], pa.array(["cart", "purchase"])),
        "not (kind in ['view'])": pc.invert(pc.equal(full["kind"], "view")),
        "100 <= seq < 200": pc.and_(pc.greater_equal(full["seq"], 100), pc.less(full["seq"], 200)),
        "50 < amount": pc.greater(full["amount"], 50),
        "user_id is not None and col('user_id') != 'user-3'": pc.not_equal(full["user_id"], "user-3"),
        "seq < 10 or seq >= 11990": pc.or_(pc.less(full["seq"], 10), pc.greater_equal(full["seq"], 11990)),
        "ts >= timestamp('2023-11-14T22:13:20.500')": pc.greater_equal(
            full["ts"], pa.scalar(1_700_000_000_500, pa.timestamp("ms"))
        ),
    }
    for text, mask in cases.items():
        got = _read_all(ParquetSource(ParquetOptions(path=str(events), filter=text, columns=["seq"])))
        assert got.column("seq").to_pylist() == full.filter(mask).column("seq").to_pylist(), text


def test_dnf_list_filter(events: Path) -> None:
    got = _read_all(
        ParquetSource(
            ParquetOptions(path=str(events), filter=[["seq", "<", 5], ["kind", "!=", "zzz"]], columns=["seq"])
        )
    )
    assert got.column("seq").to_pylist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "text",
    ["amount >", "__import__('os').system('true')", "amount ** 2 > 2", "f(x) == 1", "amount is 3", "x in y"],
)
def test_unsafe_or_invalid_filters_are_refused(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        compile_filter(text)


def test_arithmetic_and_functions_filter_like_python(events: Path) -> None:
    full = pq.read_table(events)
    got = _read_all(
        ParquetSource(ParquetOptions(path=str(events), filter="seq * 2 + 1 < 11", columns=["seq"]))
    )
    assert got.column("seq").to_pylist() == [s for s in full.column("seq").to_pylist() if s * 2 + 1 < 11]


def test_filter_errors_surface_at_validation() -> None:
    with pytest.raises(ValueError, match="invalid filter"):
        ParquetOptions(path="x", filter="amount >")


def test_glob_directory_file_and_list_paths(events: Path) -> None:
    files = sorted(str(p) for p in events.glob("*.parquet"))
    assert ParquetSource(ParquetOptions(path=str(events))).files == files
    assert ParquetSource(ParquetOptions(path=str(events / "part-0000[12].parquet"))).files == files[1:]
    assert ParquetSource(ParquetOptions(path=files[0])).files == files[:1]
    assert ParquetSource(ParquetOptions(path=[files[2], files[0], files[2]])).files == [files[0], files[2]]


def test_directories_are_searched_recursively_and_skip_hidden_files(tmp_path: Path) -> None:
    write_sample(tmp_path / "year=2024" / "month=01", 100, files=1)
    write_sample(tmp_path / "year=2024" / "month=02", 100, files=2)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part.crc").write_text("x")
    source = ParquetSource(ParquetOptions(path=str(tmp_path)))
    assert len(source.files) == 3
    assert _read_all(source).num_rows == 200
    recursive_glob = ParquetSource(ParquetOptions(path=str(tmp_path / "**" / "*.parquet")))
    assert recursive_glob.files == source.files


def test_paths_that_match_nothing_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="matches no files"):
        ParquetSource(ParquetOptions(path=str(tmp_path / "*.parquet")))
    with pytest.raises(ConfigError, match="no such file or directory"):
        ParquetSource(ParquetOptions(path=str(tmp_path / "missing.parquet")))
    with pytest.raises(ConfigError, match="holds no data files"):
        ParquetSource(ParquetOptions(path=str(tmp_path)))


def test_checkpoint_covers_only_acked_batches(events: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(events), batch_size=1000))
    it = source.batches()
    batch1, token1 = next(it)
    _batch2, _token2 = next(it)  # read, never acked
    source.ack(token1)
    state = source.checkpoint()
    assert state["rows"] == batch1.num_rows == 1000
    assert (state["file_index"], state["row_group"], state["row_offset"]) == (0, 0, 1000)
    resumed = _read_all(ParquetSource(ParquetOptions(path=str(events), batch_size=1000), checkpoint=state))
    assert resumed.column("seq").to_pylist() == list(range(1000, 12_000))


def test_resume_works_with_another_batch_size(events: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(events), batch_size=333))
    it = source.batches()
    acked = 0
    for _ in range(7):  # five batches fill the first row group (4 x 333 + 168), two start the second
        batch, token = next(it)
        source.ack(token)
        acked += batch.num_rows
    state = json.loads(json.dumps(source.checkpoint()))
    assert acked == state["rows"] == 1500 + 666
    resumed = _read_all(ParquetSource(ParquetOptions(path=str(events), batch_size=5000), checkpoint=state))
    assert resumed.column("seq").to_pylist() == list(range(acked, 12_000))


def test_a_checkpoint_of_a_file_no_longer_matched_is_refused(events: Path, tmp_path: Path) -> None:
    state = {
        "file": str(tmp_path / "gone.parquet"),
        "file_index": 0,
        "row_group": 0,
        "row_offset": 0,
        "rows": 0,
    }
    with pytest.raises(CheckpointError, match="no longer matches"):
        ParquetSource(ParquetOptions(path=str(events)), checkpoint=state)


def test_progress_reports_total_rows_from_metadata(events: Path) -> None:
    assert ParquetSource(ParquetOptions(path=str(events))).progress()["total_rows"] == 12_000
    assert "total_rows" not in ParquetSource(ParquetOptions(path=str(events), filter="seq < 3")).progress()


def test_batch_size_is_not_part_of_the_resume_identity() -> None:
    a = ParquetSource.resume_identity(ParquetOptions(path="x", batch_size=1))
    b = ParquetSource.resume_identity(ParquetOptions(path="x", batch_size=2))
    c = ParquetSource.resume_identity(ParquetOptions(path="x", filter="seq > 1"))
    assert a == b != c


def test_filtered_rows_are_regrouped_into_full_batches(events: Path) -> None:
    source = ParquetSource(ParquetOptions(path=str(events), batch_size=200, filter="amount >= 50"))
    per_row_group: dict[tuple[int, int], list[int]] = {}
    for batch, token in source.batches():
        per_row_group.setdefault((token.file_index, token.row_group), []).append(batch.num_rows)
        source.ack(token)
    for sizes in per_row_group.values():
        assert all(n == 200 for n in sizes[:-1])  # only a row group's last batch may be short
        assert 0 < sizes[-1] <= 200


def test_positions_are_row_numbers_of_the_row_group_whatever_the_filter(tmp_path: Path) -> None:
    pq.write_table(pa.table({"seq": list(range(100))}), tmp_path / "part-0.parquet", row_group_size=100)
    source = ParquetSource(ParquetOptions(path=str(tmp_path), filter="seq >= 10", batch_size=5))
    batch, token = next(iter(source.batches()))
    source.ack(token)
    assert batch.column("seq").to_pylist() == [10, 11, 12, 13, 14]
    assert source.checkpoint()["row_offset"] == 15  # the next read starts at row 15, not at the 6th kept row


def test_an_old_checkpoint_counting_filtered_rows_is_refused_with_what_to_do(events: Path) -> None:
    old = {"file": str(sorted(events.glob("*.parquet"))[0]), "file_index": 0, "row_group": 0, "row_offset": 7}
    with pytest.raises(CheckpointError, match=r"older shardline-parquet.*delete the checkpoint"):
        ParquetSource(ParquetOptions(path=str(events), filter="seq > 3"), checkpoint={**old, "rows": 7})
    unfiltered = ParquetSource(ParquetOptions(path=str(events)), checkpoint={**old, "rows": 7})
    assert _read_all(unfiltered).column("seq")[0].as_py() == 7  # without a filter both formats agree
