"""The [[transform]] steps over real Arrow batches: what each step does, what SQL is refused, how row
order and source positions are kept, and the config's one-line errors naming the step and the column."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest
from shardline.config import build_pipeline
from shardline.errors import ConfigError
from shardline.sql_transform import SqlTransform
from shardline.transforms import (
    ROW_COLUMN,
    StepFailed,
    TransformChain,
    TransformError,
    TransformStep,
    parse_steps,
)

N = 1_000


@pytest.fixture
def batch() -> pa.RecordBatch:
    rng = np.random.default_rng(7)
    kinds = np.array(["purchase", "view", "click"])[rng.integers(0, 3, N)]
    return pa.record_batch(
        {
            "user_id": pa.array([f"u{i % 13}" for i in range(N)]),
            "amount": pa.array(rng.random(N) * 100),
            "kind": pa.array(kinds),
            "seq": pa.array(np.arange(N, dtype=np.int64)),
            "qty": pa.array(rng.integers(0, 5, N).astype(np.int32)),
        }
    )


def _chain(*tables: dict) -> TransformChain:
    steps, errors = parse_steps(list(tables), "pipeline.toml")
    assert not errors, errors
    return TransformChain(steps)


def test_filter_keeps_matching_rows_in_order_and_says_which(batch: pa.RecordBatch) -> None:
    chain = _chain({"filter": "kind == 'purchase' and amount * 2 >= 50"})
    out, rows = chain.apply(batch)
    table = batch.to_pydict()
    expected = [i for i in range(N) if table["kind"][i] == "purchase" and table["amount"][i] * 2 >= 50]
    assert out.column("seq").to_pylist() == expected
    assert rows is not None and rows.tolist() == expected


def test_select_rename_cast_and_set_reshape_columns(batch: pa.RecordBatch) -> None:
    chain = _chain(
        {"set": {"cents": "cast(floor(amount * 100), 'int64')", "tag": "concat(upper(user_id), '-', kind)"}},
        {"rename": {"user_id": "user"}},
        {"cast": {"qty": "int64"}},
        {"select": ["user", "cents", "tag", "qty"]},
    )
    out, rows = chain.apply(batch)
    assert rows is None  # every row, in order
    assert out.schema.names == ["user", "cents", "tag", "qty"]
    assert out.schema.field("qty").type == pa.int64()
    first = batch.slice(0, 1).to_pylist()[0]
    got = out.slice(0, 1).to_pylist()[0]
    assert got["cents"] == int(first["amount"] * 100)
    assert got["tag"] == f"{first['user_id'].upper()}-{first['kind']}"
    assert chain.check(batch.schema) == out.schema


def test_sql_runs_over_the_batch_and_keeps_source_positions(batch: pa.RecordBatch) -> None:
    chain = _chain({"sql": "SELECT user_id, seq, amount * 100 AS cents FROM batch WHERE kind = 'view'"})
    out, rows = chain.apply(batch)
    views = [i for i, k in enumerate(batch.column("kind").to_pylist()) if k == "view"]
    assert out.schema.names == ["user_id", "seq", "cents"]
    assert out.column("seq").to_pylist() == views
    assert rows is not None and rows.tolist() == views
    assert ROW_COLUMN not in out.schema.names


def test_sql_window_function_output_is_put_back_in_source_order(batch: pa.RecordBatch) -> None:
    # DuckDB hands a window's rows back grouped by partition: the runner re-sorts by row number
    sql = "SELECT seq, user_id, row_number() OVER (PARTITION BY user_id ORDER BY amount) AS rank FROM batch"
    out, rows = _chain({"sql": sql}).apply(batch)
    assert out.column("seq").to_pylist() == list(range(N))
    assert rows is None


def test_a_filter_after_sql_maps_rows_back_to_the_source_batch(batch: pa.RecordBatch) -> None:
    chain = _chain({"sql": "SELECT seq, qty FROM batch WHERE seq % 2 = 1"}, {"filter": "qty >= 3"})
    out, rows = chain.apply(batch)
    assert rows is not None
    assert out.column("seq").to_pylist() == rows.tolist()  # seq is the input row here


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT * FROM batch ORDER BY amount", "ORDER BY"),
        ("SELECT kind, count(*) AS n FROM batch GROUP BY kind", "GROUP BY"),
        ("SELECT DISTINCT kind FROM batch", "DISTINCT"),
        ("SELECT * FROM batch LIMIT 5", "LIMIT"),
        ("SELECT * FROM batch a JOIN batch b USING (seq)", "FROM batch alone"),
        ("SELECT seq FROM batch UNION ALL SELECT seq FROM batch", "UNION"),
        ("SELECT 1; SELECT 2", "one SELECT"),
        ("SELEC seq FROM batch", "syntax error"),
    ],
)
def test_sql_that_folds_or_reorders_rows_is_refused(sql: str, why: str) -> None:
    steps, errors = parse_steps([{"sql": sql}], "pipeline.toml")
    assert not steps
    assert len(errors) == 1 and errors[0].startswith("pipeline.toml: transform step 1 (sql): ")
    assert why.lower() in errors[0].lower()


def test_sql_aggregates_are_refused_when_bound_against_the_schema(batch: pa.RecordBatch) -> None:
    chain = _chain({"sql": "SELECT count(*) AS n FROM batch"})
    with pytest.raises(TransformError, match=r"transform step 1 \(sql\): aggregates"):
        chain.check(batch.schema)


@pytest.mark.parametrize(
    ("steps", "column", "message"),
    [
        ([{"select": ["seq"]}, {"sql": "SELECT amout FROM batch"}], "amout", r"step 2 \(sql\).*amout"),
        ([{"filter": "amonut > 1"}], "amonut", r"step 1 \(filter\): column \"amonut\" not found"),
        ([{"rename": {"seq": "n"}}, {"select": ["seq"]}], "seq", r"step 2 \(select\): column \"seq\""),
        ([{"cast": {"kind": "int64"}}, {"cast": {"user": "int64"}}], "user", r"step 2 \(cast\)"),
        ([{"set": {"x": "upper(amount)"}}], None, r"step 1 \(set\)"),
        ([{"rename": {"seq": "kind"}}], "kind", r'two columns would be called "kind"'),
    ],
)
def test_schema_check_names_the_step_and_the_column(
    batch: pa.RecordBatch, steps: list[dict], column: str | None, message: str
) -> None:
    chain = _chain(*steps)
    with pytest.raises(TransformError, match=message) as info:
        chain.check(batch.schema)
    if column is not None:
        assert info.value.column == column


def test_a_step_that_raises_on_a_batch_names_itself(batch: pa.RecordBatch) -> None:
    chain = _chain({"filter": "seq >= 0"}, {"cast": {"kind": "int64"}})
    with pytest.raises(StepFailed, match=r"transform step 2 \(cast\) failed") as info:
        chain.apply(batch)
    assert info.value.step.number == 2


def test_config_errors_are_one_line_each_naming_the_file_and_step() -> None:
    doc = {
        "source": {"type": "parquet", "path": "x.parquet"},
        "sink": {"stream": "local:///tmp/nowhere/bigdata/s"},
        "transform": [
            {"where": "x > 1"},
            {"sql": "SELECT 1 FROM batch", "filter": "x > 1"},
            {"cast": {"a": "int99"}},
            {"select": "a"},
            {"filter": "a >"},
        ],
    }
    with pytest.raises(ConfigError) as info:
        build_pipeline(doc, origin="p.toml")
    lines = str(info.value).split("; ")
    assert lines[0] == (
        "p.toml: transform step 1: where: unknown key "
        "(expected one step kind: cast, filter, rename, select, set, sql)"
    )
    assert lines[1].startswith("p.toml: transform step 2: expected exactly one step kind")
    assert lines[2].startswith("p.toml: transform step 3 (cast): a: unknown type 'int99'")
    assert lines[3].startswith("p.toml: transform step 4 (select): expected a list of column names")
    assert lines[4].startswith("p.toml: transform step 5 (filter): invalid filter: cannot parse")


def test_a_single_transform_table_is_refused() -> None:
    steps, errors = parse_steps({"sql": "SELECT * FROM batch"}, "p.toml")
    assert not steps and "expected a list of steps ([[transform]] tables)" in errors[0]


def test_sql_without_duckdb_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)  # as if the extra were not installed
    with pytest.raises(TransformError, match=r'pip install "shardline\[sql\]"'):
        SqlTransform("SELECT * FROM batch")


def test_an_empty_result_is_an_empty_batch_with_the_output_columns(batch: pa.RecordBatch) -> None:
    chain = TransformChain([TransformStep(1, "sql", SqlTransform, "SELECT seq FROM batch WHERE seq < 0")])
    out, rows = chain.apply(batch)
    assert out.num_rows == 0 and out.schema.names == ["seq"]
    assert rows is not None and len(rows) == 0
    chain.close()


def test_sql_follows_batches_whose_schema_changes() -> None:
    # a Kafka source with JSON values infers each batch's columns: the query is bound again
    step = SqlTransform("SELECT * FROM batch WHERE x > 1")
    assert step.apply_rows(pa.record_batch({"x": [1, 2, 3]}))[0].to_pydict() == {"x": [2, 3]}
    two = pa.record_batch({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    assert step.apply_rows(two)[0].to_pydict() == {"x": [2, 3], "y": ["b", "c"]}
    assert step.apply_rows(pa.record_batch({"x": [0.5, 2.5]}))[0].to_pydict() == {"x": [2.5]}
    step.close()


def test_the_progress_bar_shows_filtered_rows() -> None:
    import io

    from rich.console import Console
    from shardline.progress import RichDisplay

    out = io.StringIO()
    display = RichDisplay("parquet", 1_000, console=Console(file=out, width=200, force_terminal=False))
    display.update(1_000, 2048, filtered=375)
    display.close()
    assert "1,000/1,000 rows (375 filtered)" in out.getvalue()
