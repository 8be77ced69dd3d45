"""A newcomer's first hour, continued: `validate` refuses what `run` refuses, errors name the
pipeline file, and a refused record says why. Real subprocesses, a real server, real Parquet."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from shardline_parquet import write_sample

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
_names = count()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The ``shardline`` command in a subprocess, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("V3IO_API", "V3IO_ACCESS_KEY")}
    return subprocess.run([SHARDLINE, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def _in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (the real CLI through click's runner: no interpreter start)."""
    from click.testing import CliRunner
    from shardline.cli import _build

    result = CliRunner(env={"V3IO_API": None, "V3IO_ACCESS_KEY": None}).invoke(_build(), list(args))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small Parquet files (columns seq, user_id, kind, amount, ts, payload)."""
    directory = tmp_path_factory.mktemp("first-hour-validate") / "sample"
    write_sample(directory, 40, files=2, row_group_size=20)
    return directory


def _pipeline(tmp_path: Path, sample: Path, stream: str, *, extra_source: str = "", shards: int = 2) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{sample}"
{extra_source}

[sink]
stream = "{stream}"
create = {{ shards = {shards} }}

[sink.limits]
start_timeout_s = 0.5
"""
    )
    return path


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        ("http://127.0.0.1:8081/bigdata", "must name a container and a stream path"),
        ("http:///bigdata/x", "stream URL 'http:///bigdata/x' has no host"),
        ("http://127.0.0.1:99999/bigdata/x", "has an invalid port"),
        ("http://127.0.0.1:8081/bigdata/../x", "path segment '..' is not allowed"),
        ("http://127.0.0.1:8081/bigdata/./x", "path segment '.' is not allowed"),
        ("gopher://127.0.0.1/bigdata/x", "no transport for 'gopher://'"),
        ("v3io:///bigdata", "must name a container and a stream path"),
    ],
)
def test_validate_refuses_a_stream_url_with_the_same_line_run_prints(
    tmp_path: Path, sample: Path, stream: str, message: str
) -> None:
    path = _pipeline(tmp_path, sample, stream)
    validated = _in_process("validate", str(path))
    ran = _in_process("run", str(path))
    assert validated.returncode == 1 and ran.returncode == 1
    assert _error_lines(validated.stderr) == _error_lines(ran.stderr)
    (line,) = _error_lines(validated.stderr)
    assert line.startswith(f"error: {path}: sink.stream: ") and message in line
    assert "Traceback" not in validated.stderr + ran.stderr


def test_validate_and_run_refuse_a_bad_url_in_a_subprocess_too(tmp_path: Path, sample: Path) -> None:
    path = _pipeline(tmp_path, sample, "http:///bigdata/x")
    for command in ("validate", "run"):
        got = _cli(command, str(path))
        assert got.returncode == 1 and "Traceback" not in got.stderr
        assert got.stderr == f"error: {path}: sink.stream: stream URL 'http:///bigdata/x' has no host\n"


def test_a_v3io_url_validates_without_v3io_api_and_run_says_what_is_missing(
    tmp_path: Path, sample: Path
) -> None:
    path = _pipeline(tmp_path, sample, "v3io:///bigdata/x")  # V3IO_API may be set only where it runs
    assert _in_process("validate", str(path)).returncode == 0
    ran = _in_process("run", str(path))
    assert ran.returncode == 1
    (line,) = _error_lines(ran.stderr)
    assert line.startswith(
        f"error: {path}: stream URL 'v3io:///bigdata/x' takes its endpoint from env V3IO_API"
    )


def test_validate_refuses_more_shards_than_a_stream_can_have(tmp_path: Path, sample: Path) -> None:
    path = _pipeline(tmp_path, sample, "http://127.0.0.1:8081/bigdata/x", shards=5000)
    got = _in_process("validate", str(path))
    assert got.returncode == 1
    assert _error_lines(got.stderr) == [
        f"error: {path}: sink.create.shards: expected an integer <= 4096 "
        "(the most shards a http:// stream can have), got 5000"
    ]


def test_the_shard_limit_validate_uses_is_the_one_the_server_enforces(stream_server_session: Any) -> None:
    from shardline.errors import TransportError
    from shardline_v3io.client import V3ioClient

    client = V3ioClient(stream_server_session.url)
    name = f"too-many-{next(_names)}-{os.getpid()}"

    async def main() -> bool:
        try:
            with pytest.raises(TransportError, match=r"ShardCount must be within 1\.\.4096, got 4097"):
                await client.create_stream("bigdata", name, 4097)
            return await client.create_stream("bigdata", name, 4096)
        finally:
            await client.close()

    assert asyncio.run(main()) is True


def test_validate_refuses_a_filter_on_a_missing_column_naming_the_file(tmp_path: Path, sample: Path) -> None:
    path = _pipeline(tmp_path, sample, "http://127.0.0.1:8081/bigdata/x", extra_source='filter = "nope == 1"')
    got = _in_process("validate", str(path))
    assert got.returncode == 1
    (line,) = _error_lines(got.stderr)
    assert line.startswith(f"error: {path}: source.filter = 'nope == 1': 'nope' is in none of the 2 files")


def test_validate_does_not_connect_to_the_stream(tmp_path: Path, sample: Path) -> None:
    path = _pipeline(tmp_path, sample, "http://127.0.0.1:9/bigdata/nobody-listens")  # discard port
    got = _in_process("validate", str(path))
    assert got.returncode == 0, got.stderr
    assert f"{path}: ok: parquet source -> http://127.0.0.1:9/bigdata/nobody-listens" in got.stdout


def test_a_sink_that_cannot_start_is_one_line_naming_the_pipeline_file(tmp_path: Path, sample: Path) -> None:
    path = _pipeline(tmp_path, sample, "http://127.0.0.1:9/bigdata/nobody-listens")
    got = _cli("run", str(path))
    assert got.returncode == 1
    (line,) = _error_lines(got.stderr)
    assert line.startswith(f"error: {path}: cannot reach stream http://127.0.0.1:9/bigdata/nobody-listens")
    assert "Traceback" not in got.stderr


def test_a_checkpoint_error_at_run_time_names_the_pipeline_file(
    tmp_path: Path, sample: Path, stream_server_session: Any
) -> None:
    checkpoint = tmp_path / "events.ckpt"
    checkpoint.write_text("this is not a checkpoint")
    path = _pipeline(tmp_path, sample, f"{stream_server_session.url}/bigdata/ckpt-{next(_names)}")
    path.write_text(path.read_text() + f'\n[checkpoint]\npath = "{checkpoint}"\n')
    got = _cli("run", str(path))
    assert got.returncode == 1
    (line,) = _error_lines(got.stderr)
    assert line.startswith(f"error: {path}: ") and str(checkpoint) in line
    assert "Traceback" not in got.stderr


def test_a_record_the_server_refuses_says_which_field_and_limit(stream_server_session: Any) -> None:
    url = f"{stream_server_session.url}/bigdata/refused-{next(_names)}-{os.getpid()}"
    assert _cli("stream", "create", url, "--shards", "2").returncode == 0
    long_key = _cli("stream", "put", url, "--key", "k" * 300, "a")
    assert long_key.returncode == 1
    assert (
        "error: record 0: InvalidArgumentException (-22): PartitionKey is 300 bytes (UTF-8); the limit is 256"
        in long_key.stderr
    )
    no_shard = _cli("stream", "put", url, "--shard", "5", "a")
    assert (
        "error: record 0: ShardIDOutOfRangeException (-34): ShardId 5 does not exist; "
        "the stream has 2 shards (0..1)" in no_shard.stderr
    )


def test_the_transport_keeps_the_error_name_and_adds_the_servers_detail(stream_server_session: Any) -> None:
    from shardline_v3io.transport import V3ioTransport

    transport = V3ioTransport(f"{stream_server_session.url}/bigdata/detail-{next(_names)}-{os.getpid()}")

    async def main() -> Any:
        try:
            await transport.create(2, 24)
            body = b'{"Records":[{"Data":"eA==","ShardId":1},{"Data":"eQ==","ShardId":7}]}'
            return await transport.put_records_body(body, 2)
        finally:
            await transport.close()

    (failure,) = asyncio.run(main()).failures
    assert failure.index == 1 and failure.error_message == "ShardIDOutOfRangeException"
    assert failure.describe() == (
        "ShardIDOutOfRangeException: ShardId 7 does not exist; the stream has 2 shards (0..1)"
    )


def test_a_dead_letter_carries_the_error_name_and_the_streams_detail(tmp_path: Path) -> None:
    import orjson
    import pyarrow as pa
    from shardline import StreamSink
    from shardline.faketransport import FakeTransport

    transport = FakeTransport(shard_count=1, permanent=lambda data: data == b"bad")
    target = tmp_path / "dead.jsonl"
    batch = pa.record_batch({"payload": [b"ok", b"bad"]})
    with StreamSink(transport, data="raw", data_column="payload", dead_letter=target) as sink:
        sink.write(batch)
    (entry,) = [orjson.loads(line) for line in target.read_bytes().splitlines()]
    assert entry["data"] == "bad"
    assert entry["error"] == "InvalidRecord: the record matched FakeTransport.permanent"  # the fake's name


def test_the_local_transport_reports_the_same_detail(tmp_path: Path) -> None:
    from shardline.transport import PutRecord
    from shardline_v3io.local import LocalTransport

    transport = LocalTransport(f"local://{tmp_path}/store/bigdata/s")

    async def main() -> Any:
        await transport.create(1, 24)
        return await transport.put_records([PutRecord(b"x", partition_key="é" * 200)])

    (result,) = asyncio.run(main())
    assert result.error_message == "InvalidArgumentException"
    assert result.error_detail == "PartitionKey is 400 bytes (UTF-8); the limit is 256"


def _bridge(tmp_path: Path, source_extra: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(
        f"""
[source]
type = "kafka"
bootstrap_servers = "127.0.0.1:1"
topics = ["orders"]
{source_extra}

[sink]
stream = "local://{tmp_path}/store/bigdata/orders"
create = {{ shards = 1 }}
"""
    )
    return path


def test_a_bridge_without_a_broker_says_what_it_waits_for_then_fails_naming_the_servers(
    tmp_path: Path,
) -> None:
    path = _bridge(tmp_path, "connect_timeout_s = 2")
    started = time.monotonic()
    got = _cli("run", str(path))
    took = time.monotonic() - started
    assert got.returncode == 1
    assert (
        "shardline: kafka source: waiting for a broker at 127.0.0.1:1 (up to 2 s, connect_timeout_s)"
        in got.stderr
    )
    (line,) = _error_lines(got.stderr)
    assert line == (
        f"error: {path}: kafka source: no broker at 127.0.0.1:1 answered within 2 s (connect_timeout_s); "
        "start the broker (a local one: python -m shardline_kafka.broker), "
        "or fix bootstrap_servers and the security options"
    )
    assert "Traceback" not in got.stderr
    assert took < 20  # the 2 s wait and an interpreter start, not kafka-python's 30 s default


def test_the_bridge_connect_timeout_has_one_knob(tmp_path: Path) -> None:
    path = _bridge(tmp_path, "consumer = { bootstrap_timeout_ms = 1000 }")
    got = _in_process("validate", str(path))
    assert got.returncode == 1
    assert "bootstrap_timeout_ms cannot be set here" in got.stderr and "connect_timeout_s" in got.stderr


def test_the_bridge_connects_within_ten_seconds_by_default() -> None:
    from shardline_kafka.options import KafkaSourceOptions

    options = KafkaSourceOptions(bootstrap_servers="b:9092", topics=["t"])
    assert options.connect_timeout_s == 10.0
    assert options.consumer_config()["bootstrap_timeout_ms"] == 10_000


REPO = Path(__file__).resolve().parents[2]
EXAMPLE_PLUGIN = REPO / "examples" / "plugin-http-poll"


def test_the_workspace_venv_has_its_own_pip_so_uv_run_pip_installs_into_it() -> None:
    # without it, `uv run pip install ./examples/plugin-http-poll` ran the system pip, which installs
    # elsewhere and fails with "No matching distribution found for shardline"
    assert Path(sys.executable).with_name("pip").is_file()


def _plain(args: list[str | Path], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    got = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )
    assert got.returncode == 0, f"{got.args} exited {got.returncode}:\n{got.stdout}\n{got.stderr}"
    return got.stdout


@pytest.mark.slow
def test_plain_pip_installs_the_example_plugin_into_a_venv_that_has_shardline(tmp_path: Path) -> None:
    import shutil

    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "this test needs uv to build the wheels (python3 -m pip install uv)"
    wheels = tmp_path / "wheels"
    _plain([uv, "build", "--package", "shardline", "--wheel", "-q", "-o", wheels], cwd=REPO)
    _plain([sys.executable, "-m", "venv", tmp_path / "venv"], cwd=tmp_path)  # plain venv, plain pip
    pip = tmp_path / "venv" / "bin" / "pip"
    _plain([pip, "install", "-q", "--find-links", wheels, "shardline"], cwd=tmp_path)
    _plain([pip, "install", "-q", EXAMPLE_PLUGIN], cwd=tmp_path)  # the README's command
    listed = _plain([tmp_path / "venv" / "bin" / "shardline", "plugins"], cwd=tmp_path)
    assert "http-poll (shardline-http-poll)  source:http-poll" in listed
