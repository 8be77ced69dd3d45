"""Pipeline config: strict models, one-line messages naming file, key and expectation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from shardline import plugins
from shardline.cli import _build
from shardline.config import build_pipeline, load_pipeline, parse_override, parse_size
from shardline.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
BROKEN = sorted(p for p in CONFIGS.iterdir() if p.suffix in (".toml", ".yaml", ".yml"))
REPO = Path(__file__).resolve().parents[2]


def _expectation(path: Path) -> tuple[str, bool]:
    first = path.read_text().splitlines()[0]
    for tag, exact in (("# expect: ", True), ("# expect-start: ", False)):
        if first.startswith(tag):
            return first[len(tag) :].replace("{file}", str(path)), exact
    raise AssertionError(f"{path.name} lacks an '# expect:' first line")


@pytest.fixture(autouse=True)
def _fresh_plugins() -> None:
    plugins.reset_plugins()


def test_there_are_broken_configs_to_check() -> None:
    assert len(BROKEN) >= 15


@pytest.mark.parametrize("path", BROKEN, ids=[p.name for p in BROKEN])
def test_validate_prints_the_expected_one_line_message(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDLINE_TEST_UNSET_KEY", raising=False)
    expected, exact = _expectation(path)
    result = CliRunner().invoke(_build(), ["validate", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0].removeprefix("error: ")
    if exact:
        assert message == expected
    else:
        assert message.startswith(expected)


def test_validate_as_a_command_exits_non_zero_with_the_message() -> None:
    path = CONFIGS / "shards_not_an_integer.toml"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("shardline")), "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f'error: {path}: sink.create.shards: expected an integer >= 1, got "eight"'
    assert "Traceback" not in proc.stderr


def _good(tmp_path: Path, text: str, name: str = "pipeline.toml") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """
[source]
type = "parquet"
path = "data/*.parquet"
columns = ["user_id", "amount"]
filter = "amount > 10"

[sink]
stream = "${STREAM_URL:-http://127.0.0.1:8081/bigdata/events}"
create = { shards = 8, retention_hours = 24 }
dead_letter = "dead.jsonl"
access_key = "${SECRET_KEY}"
[sink.limits]
max_in_flight_bytes = "32MiB"

[mapping]
partition_key = "user_id"
data = "json"
partitioner = "hash"

[checkpoint]
path = ".shardline/events.ckpt"
"""


def test_good_config_maps_to_stream_sink_arguments(tmp_path: Path) -> None:
    config = load_pipeline(_good(tmp_path, GOOD), env={"SECRET_KEY": "s3cr3t"})
    assert config.source_type == "parquet"
    assert config.source_options.columns == ["user_id", "amount"]
    kwargs = config.sink_kwargs()
    assert kwargs["partition_key"] == "user_id"
    assert kwargs["create"] == {"shards": 8, "retention_hours": 24}
    assert kwargs["max_in_flight_bytes"] == 32 * 2**20
    assert kwargs["dead_letter"] == "dead.jsonl"
    assert kwargs["transport_options"] == {"access_key": "s3cr3t"}
    assert config.sink.stream == "http://127.0.0.1:8081/bigdata/events"
    assert config.checkpoint is not None and config.checkpoint.path == ".shardline/events.ckpt"


def test_yaml_and_toml_give_the_same_pipeline(tmp_path: Path) -> None:
    yaml_text = """
source: {type: parquet, path: "data/*.parquet", columns: [user_id, amount], filter: "amount > 10"}
sink:
  stream: "${STREAM_URL:-http://127.0.0.1:8081/bigdata/events}"
  create: {shards: 8, retention_hours: 24}
  dead_letter: dead.jsonl
  access_key: "${SECRET_KEY}"
  limits: {max_in_flight_bytes: 32MiB}
mapping: {partition_key: user_id, data: json, partitioner: hash}
checkpoint: {path: .shardline/events.ckpt}
"""
    env = {"SECRET_KEY": "k"}
    from_toml = load_pipeline(_good(tmp_path, GOOD), env=env)
    from_yaml = load_pipeline(_good(tmp_path, yaml_text, "pipeline.yaml"), env=env)
    assert from_yaml.sink_kwargs() == from_toml.sink_kwargs()
    assert from_yaml.source_options == from_toml.source_options
    assert from_yaml.fingerprint() == from_toml.fingerprint()


def test_env_substitution_uses_the_environment_over_the_default(tmp_path: Path) -> None:
    config = load_pipeline(
        _good(tmp_path, GOOD), env={"STREAM_URL": "local://store/bigdata/x", "SECRET_KEY": "k"}
    )
    assert config.sink.stream == "local://store/bigdata/x"


def test_a_secret_from_the_environment_is_never_echoed(tmp_path: Path) -> None:
    text = GOOD.replace("create = { shards = 8, retention_hours = 24 }", 'create = { shards = "${SHARDS}" }')
    with pytest.raises(ConfigError) as exc:
        load_pipeline(_good(tmp_path, text), env={"SHARDS": "hunter2", "SECRET_KEY": "k"})
    assert "hunter2" not in str(exc.value)
    assert "sink.create.shards: expected an integer >= 1, got a value from the environment" in str(exc.value)


def test_numbers_from_the_environment_are_accepted(tmp_path: Path) -> None:
    text = GOOD.replace("create = { shards = 8, retention_hours = 24 }", 'create = { shards = "${SHARDS}" }')
    config = load_pipeline(_good(tmp_path, text), env={"SHARDS": "12", "SECRET_KEY": "k"})
    assert config.sink.create is not None and config.sink.create.shards == 12


def test_set_overrides_win_and_their_errors_name_the_option(tmp_path: Path) -> None:
    path = _good(tmp_path, GOOD)
    env = {"SECRET_KEY": "k"}
    config = load_pipeline(
        path,
        [
            "sink.create.shards=16",
            "source.path=other/*.parquet",
            "mapping.data=raw",
            "mapping.data_column=payload",
        ],
        env=env,
    )
    assert config.sink.create is not None and config.sink.create.shards == 16
    assert config.source_options.path == "other/*.parquet"
    assert config.mapping.data == "raw"
    with pytest.raises(
        ConfigError, match=r'^--set sink.create.shards: expected an integer >= 1, got "eight"$'
    ):
        load_pipeline(path, ["sink.create.shards=eight"], env=env)
    with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE"):
        load_pipeline(path, ["sink.create.shards"], env=env)


def test_several_errors_are_reported_on_one_line() -> None:
    doc = {"source": {"type": "parquet"}, "sink": {"stream": "x", "create": {"shards": 0}}, "extra": 1}
    with pytest.raises(ConfigError) as exc:
        build_pipeline(doc, origin="p.toml")
    message = str(exc.value)
    assert "\n" not in message
    assert "p.toml: extra: unknown key" in message
    assert "p.toml: sink.create.shards: expected an integer >= 1, got 0" in message
    assert "p.toml: source.path: missing required key" in message


def test_fingerprint_ignores_batch_size_and_server_port_but_not_the_filter_or_stream() -> None:
    base = {"source": {"type": "parquet", "path": "d"}, "sink": {"stream": "http://127.0.0.1:8081/bigdata/s"}}

    def fp(source: dict[str, object] | None = None, stream: str | None = None) -> str:
        doc = {
            "source": {**base["source"], **(source or {})},
            "sink": {"stream": stream or base["sink"]["stream"]},
        }
        return build_pipeline(doc).fingerprint()

    assert fp({"batch_size": 5}) == fp()
    assert fp(stream="http://127.0.0.1:9999/bigdata/s") == fp()
    assert fp({"filter": "x > 1"}) != fp()
    assert fp(stream="http://127.0.0.1:8081/bigdata/other") != fp()


def test_override_values_are_read_as_toml_when_they_parse() -> None:
    assert parse_override("a.b=16") == (("a", "b"), 16)
    assert parse_override("a=true") == (("a",), True)
    assert parse_override('a=["x", "y"]') == (("a",), ["x", "y"])
    assert parse_override("a=data/*.parquet") == (("a",), "data/*.parquet")
    assert parse_override("a=x=y") == (("a",), "x=y")


def test_sizes() -> None:
    assert parse_size("64MiB") == 64 * 2**20
    assert parse_size("10 MB") == 10**7
    assert parse_size("512") == 512
    assert parse_size(7) == 7


def test_the_example_backfill_validates(tmp_path: Path) -> None:
    from shardline_parquet import write_sample

    write_sample(tmp_path / "events", 100, files=2)  # validate opens the files the example reads
    env = {**os.environ, "EVENTS_PATH": str(tmp_path / "events")}
    result = CliRunner(env=env).invoke(_build(), ["validate", str(REPO / "examples" / "backfill.toml")])
    assert result.exit_code == 0, result.stderr
    assert "ok: parquet source ->" in result.output
    assert "source: 2 files; 100 rows; columns seq, user_id, kind, amount, ts" in result.output
