"""[[transform]] steps end to end: Parquet backfills through SQL, filter and rename steps into the real
server give exactly what DuckDB gives over the same files; kill -9 and resume leaves no gap; a
failing step dead-letters its batch with source positions; validate names step and column; a
third-party step registered through the hook runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import shardline
from shardline import plugins
from shardline.config import load_pipeline
from shardline.pipeline import run_pipeline
from shardline_parquet import write_sample
from shardline_v3io.testing import read_stream, start_stream_server

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
REPO = Path(__file__).resolve().parents[2]

SQL = "SELECT user_id, seq, amount * 100 AS cents FROM batch WHERE kind IN ('purchase', 'cart')"
STEPS = f"""
[[transform]]
sql = "{SQL}"
[[transform]]
filter = "cents >= 2500 and user_id != 'user-3'"
[[transform]]
rename = {{ seq = "n", user_id = "user" }}
"""
# the same query, by DuckDB over the files directly
DIRECT = (
    "SELECT user_id AS user, seq AS n, amount * 100 AS cents FROM read_parquet('{glob}') "
    "WHERE kind IN ('purchase', 'cart') AND amount * 100 >= 2500 AND user_id != 'user-3' ORDER BY seq"
)


def _pipeline(tmp_path: Path, data: Path, stream: str, steps: str, batch_size: int = 250) -> Path:
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f"""
[source]
type = "parquet"
path = "{data}/*.parquet"
batch_size = {batch_size}

[sink]
stream = "{stream}"
create = {{ shards = 4 }}
dead_letter = "{tmp_path / "dead.jsonl"}"

[mapping]
partition_key = "user"
{steps}
"""
    )
    return config


def _records(stream: str) -> list[tuple[int, dict[str, Any]]]:
    return [(shard, json.loads(r.data)) for shard, rs in read_stream(stream).items() for r in rs]


def _assert_key_order(records: list[tuple[int, dict[str, Any]]]) -> None:
    per_key: dict[str, list[int]] = defaultdict(list)
    shards: dict[str, set[int]] = defaultdict(set)
    for shard, row in records:
        per_key[row["user"]].append(row["n"])
        shards[row["user"]].add(shard)
    assert all(len(s) == 1 for s in shards.values())
    for user, seqs in per_key.items():
        firsts = list(dict.fromkeys(seqs))
        assert firsts == sorted(firsts), f"rows of {user} out of order"


def test_backfill_through_sql_filter_and_rename_gives_what_duckdb_gives(
    stream_server_session: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_sample(data, 6_000, files=3, row_group_size=1_000, users=20)
    stream = f"{stream_server_session.url}/bigdata/transform-backfill"
    summary = run_pipeline(_pipeline(tmp_path, data, stream, STEPS))

    expected = duckdb.sql(DIRECT.format(glob=f"{data}/*.parquet")).fetchall()
    records = _records(stream)
    got = sorted((row["user"], row["n"], row["cents"]) for _shard, row in records)
    assert got == sorted(expected)
    assert {tuple(row) for _s, row in records} == {("user", "n", "cents")}  # exactly these columns
    _assert_key_order(records)
    assert summary.exit_code == 0 and summary.dead_letters == 0
    assert summary.rows_acked == 6_000  # every source row is acknowledged, filtered or not
    assert summary.filtered == 6_000 - len(expected)
    assert f"({summary.filtered:,} rows filtered by transforms)" in summary.line()


def test_batches_a_filter_empties_are_acknowledged_and_checkpointed(
    stream_server_session: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_sample(data, 1_000, files=1, row_group_size=500)
    stream = f"{stream_server_session.url}/bigdata/transform-empty"
    checkpoint = tmp_path / "empty.ckpt"
    steps = (
        '[[transform]]\nsql = "SELECT seq AS n, user_id AS user FROM batch WHERE seq >= 900"\n'
        f'[checkpoint]\npath = "{checkpoint}"\n'
    )
    summary = run_pipeline(_pipeline(tmp_path, data, stream, steps))  # batches 1-3 keep no row
    assert sorted(row["n"] for _s, row in _records(stream)) == list(range(900, 1_000))
    assert (summary.batches_acked, summary.rows_acked, summary.filtered) == (4, 1_000, 900)
    assert json.loads(checkpoint.read_text())["source"]["rows"] == 1_000
    again = run_pipeline(_pipeline(tmp_path, data, stream, steps))
    assert again.rows_read == 0  # the checkpoint covers the emptied batches too


def _checkpoint_rows(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["source"]["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_sigkill_and_resume_with_a_filtering_transform_leaves_no_gap(tmp_path: Path) -> None:
    rows = 5_000
    data = tmp_path / "data"
    write_sample(data, rows, files=2, row_group_size=1_000, users=10)
    checkpoint = tmp_path / "run.ckpt"
    steps = (
        "[[transform]]\nfilter = \"kind != 'view'\"\n"
        '[[transform]]\nrename = { seq = "n", user_id = "user" }\n'
    )
    # 20% of records fail and are retried: slow enough to be killed half-way
    with start_stream_server(tmp_path / "store", fault_rate=0.2, fault_seed=11) as server:
        stream = f"{server.url}/bigdata/transform-kill"
        config = _pipeline(
            tmp_path,
            data,
            stream,
            steps + f'[checkpoint]\npath = "{checkpoint}"\ninterval_s = 0.05\n',
            batch_size=100,
        )
        proc = subprocess.Popen(
            [SHARDLINE, "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 120
            while _checkpoint_rows(checkpoint) < rows // 4:
                assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
                assert time.monotonic() < deadline, "the checkpoint did not move within 120 s"
                time.sleep(0.01)  # polling the checkpoint file, with a deadline
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        killed_at = _checkpoint_rows(checkpoint)
        assert 0 < killed_at < rows
        summary = run_pipeline(config)
        assert summary.rows_read == rows - killed_at  # resumed at the checkpoint, filtered rows included
        records = _records(stream)
    table = pq.read_table(data)
    expected = set(table.filter(pc.not_equal(table.column("kind"), "view")).column("seq").to_pylist())
    delivered = {row["n"] for _s, row in records}
    assert delivered == expected  # nothing skipped, nothing the filter drops
    _assert_key_order(records)


def test_a_failing_step_dead_letters_its_batch_with_source_positions_and_the_run_goes_on(
    stream_server_session: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    seqs = list(range(1_000))
    codes = [str(s) if not 300 <= s < 310 else f"x{s}" for s in seqs]  # batch 2 (rows 250-499) cannot cast
    users = ["u" * 300 if s == 777 else f"user-{s % 5}" for s in seqs]  # a key the stream refuses
    pq.write_table(
        pa.table({"seq": seqs, "user_id": users, "code": codes, "odd": [s % 2 == 1 for s in seqs]}),
        data / "part-0.parquet",
        row_group_size=500,
    )
    stream = f"{stream_server_session.url}/bigdata/transform-dead"
    steps = (
        '[[transform]]\nfilter = "odd"\n'
        '[[transform]]\ncast = { code = "int64" }\n'
        '[[transform]]\nrename = { user_id = "user", seq = "n" }\n'
    )
    summary = run_pipeline(_pipeline(tmp_path, data, stream, steps), allow_dead_letters=True)

    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    failed = [d for d in dead if d["reason"] == "transform failed"]
    assert sorted(json.loads(d["data"])["seq"] for d in failed) == list(range(250, 500))  # the whole batch
    for entry in failed:
        seq = json.loads(entry["data"])["seq"]
        assert "transform step 2 (cast) failed" in entry["error"]
        assert entry["origin"]["file"] == str(data / "part-0.parquet")
        assert entry["origin"]["file_row"] == seq  # the source position of that very row
        assert (entry["origin"]["row_group"], entry["origin"]["row"]) == divmod(seq, 500)
    # the stream refused row 777's key: after the filter, its dead letter still points at row 777
    refused = [d for d in dead if d["reason"] != "transform failed"]
    assert [d["origin"]["file_row"] for d in refused] == [777]
    delivered = sorted(row["n"] for _s, row in _records(stream))
    assert delivered == [s for s in seqs if s % 2 == 1 and not 250 <= s < 500 and s != 777]
    assert summary.dead_letters == 250 + 1
    assert summary.rows_acked == 1_000  # the failed batch is acknowledged too: the run went on


def _cli(*args: str) -> tuple[int, list[str], list[str]]:
    """The real ``shardline`` command, in-process (a subprocess would spend seconds importing)."""
    from click.testing import CliRunner
    from shardline.cli import _build

    plugins.reset_plugins()
    result = CliRunner().invoke(_build(), list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout.splitlines(), result.stderr.splitlines()


def test_validate_names_the_step_and_the_column(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_sample(data, 100, files=1)
    config = _pipeline(
        tmp_path,
        data,
        "local:///tmp/unused/bigdata/s",
        '[[transform]]\nrename = { user_id = "user" }\n'
        '[[transform]]\nsql = "SELECT user, amout FROM batch"\n',
    )
    code, _out, err = _cli("validate", str(config))
    assert code == 1
    [line] = err
    prefix = f"error: {config}: transform step 2 (sql): Binder Error: "
    assert line.startswith(prefix + 'Referenced column "amout" not found in FROM clause!')
    assert '"amount"' in line  # DuckDB's candidate bindings
    config.write_text(config.read_text().replace("amout", "amount"))
    code, out, err = _cli("validate", str(config))
    assert code == 0, err
    assert f"{config}: transforms: rename, sql -> columns user, amount" in out
    config.write_text(config.read_text().replace('partition_key = "user"', 'partition_key = "user_id"'))
    code, _out, err = _cli("validate", str(config))
    assert code == 1
    assert err == [
        f'error: {config}: the [[transform]] steps give no column "user_id" for [mapping] partition_key '
        "(they give: user, amount)"
    ]


class Redact(shardline.Transform):
    """A third-party step: ``redact = ["col", ...]`` replaces those string columns by their length."""

    Options: ClassVar[Any] = list[str]
    expects: ClassVar[str] = "a list of string columns"

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        for name in self.options:
            if name not in schema.names:
                raise shardline.TransformError(f'no column "{name}" to redact', column=name)
        return pa.schema([f.with_type(pa.int32()) if f.name in self.options else f for f in schema])

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = [
            pc.utf8_length(c) if n in self.options else c
            for n, c in zip(batch.schema.names, batch.columns, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


class _RedactPlugin:
    @shardline.hookimpl
    def shardline_register_transforms(self, register: Any) -> None:
        register("redact", Redact)


@pytest.fixture
def redact_plugin() -> Iterator[None]:
    name = plugins.register_plugin(_RedactPlugin(), name="test-redact")
    try:
        yield
    finally:
        plugins.unregister_plugin(name)


def test_a_third_party_step_registered_through_the_hook_runs(
    redact_plugin: None, stream_server_session: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_sample(data, 500, files=1, payload_bytes=12)
    stream = f"{stream_server_session.url}/bigdata/transform-plugin"
    steps = '[[transform]]\nredact = ["payload"]\n[[transform]]\nrename = { user_id = "user", seq = "n" }\n'
    config = _pipeline(tmp_path, data, stream, steps)
    assert "redact" in plugins.registered("transforms")
    summary = run_pipeline(config)
    assert summary.records == 500
    rows = [row for _s, row in _records(stream)]
    assert {row["payload"] for row in rows} == {12}  # the plugin's output, not the hex text
    bad = config.read_text().replace('redact = ["payload"]', 'redact = ["secret"]')
    config.write_text(bad)
    with pytest.raises(shardline.TransformError, match=r'transform step 1 \(redact\): no column "secret"'):
        run_pipeline(load_pipeline(config))


def test_the_example_transform_pipeline_validates_and_runs(
    stream_server_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_sample(tmp_path / ".shardline" / "demo" / "sample", 4_000, files=2, row_group_size=1_000)
    stream = f"{stream_server_session.url}/bigdata/example-purchases"
    monkeypatch.setenv("EVENTS_STREAM", stream)
    monkeypatch.chdir(tmp_path)  # the example's paths are relative to the working directory
    example = str(REPO / "examples" / "transform.toml")
    for command in ("validate", "run"):
        code, _out, err = _cli(command, example)
        assert code == 0, err
    rows = [json.loads(r.data) for rs in read_stream(stream).values() for r in rs]
    source = pq.read_table(tmp_path / ".shardline" / "demo" / "sample")  # noqa: F841 - DuckDB reads it by name
    expected = duckdb.sql(
        "SELECT seq FROM source WHERE kind = 'purchase' AND CAST(round(amount * 100) AS BIGINT) >= 1000"
    ).fetchall()
    assert sorted(r["seq"] for r in rows) == sorted(s for (s,) in expected)
    assert {tuple(r) for r in rows} == {("user", "seq", "cents", "kind_tag")}
    assert {r["kind_tag"] for r in rows} == {"PURCHASE"}
