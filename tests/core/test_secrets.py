"""An access key given in the stream URL is used, but never persisted or printed.

Checkpoints, dead-letter rows, `shardline validate` and `shardline run` output show the URL through
``shardline.redact_url``; the checkpoint identity does not depend on the key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardline import load_pipeline, redact_url
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import start_server

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
KEY = "s3cr3t-KEY-4711"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:KEY@127.0.0.1:8081/bigdata/s", "http://user:***@127.0.0.1:8081/bigdata/s"),
        ("http://:KEY@host/c/s", "http://:***@host/c/s"),
        ("https://u:K%40Y@host:1/c/s?x=1", "https://u:***@host:1/c/s?x=1"),
        ("http://u:a:b@host/c/s", "http://u:***@host/c/s"),
        ("http://u:p@w@host/c/s", "http://u:***@host/c/s"),
        ("v3io:///bigdata/s?access_key=KEY&shards=2", "v3io:///bigdata/s?access_key=***&shards=2"),
        (
            "kinesis://s?region=eu&aws_secret_access_key=KEY",
            "kinesis://s?region=eu&aws_secret_access_key=***",
        ),
        ("http://h/c/s?token=KEY#frag", "http://h/c/s?token=***#frag"),
        ("http://h/c/s?X-Amz-Signature=KEY", "http://h/c/s?X-Amz-Signature=***"),
        ("http://user@host/c/s", "http://user@host/c/s"),
        ("http://127.0.0.1:8081/bigdata/s", "http://127.0.0.1:8081/bigdata/s"),
        ("local://.shardline/data/bigdata/s", "local://.shardline/data/bigdata/s"),
        ("kafka:topic[0]", "kafka:topic[0]"),
        ("", ""),
    ],
)
def test_redact_url_hides_passwords_and_secret_parameters(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def _pipeline(tmp_path: Path, stream: str) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    table = pa.table({"user_id": ["a", "b", "a"], "payload": ["x", "y" * (2 * 2**20), "z"]})  # row 1 > 1 MB
    pq.write_table(table, data / "part.parquet")
    path = tmp_path / "pipeline.toml"
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{data}"

[sink]
stream = "{stream}"
create = {{ shards = 2 }}
dead_letter = "{tmp_path / "dead.jsonl"}"

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{tmp_path / "run.ckpt"}"
"""
    )
    return path


def test_a_key_in_the_stream_url_is_used_but_never_written_or_printed(tmp_path: Path) -> None:
    with start_server(tmp_path / "store", access_key=KEY) as server:
        host = server.url.removeprefix("http://")
        stream = f"http://user:{KEY}@{host}/bigdata/secret-test"
        config = _pipeline(tmp_path, stream)

        validate = subprocess.run(
            [SHARDLINE, "validate", str(config)], capture_output=True, text=True, timeout=120
        )
        assert validate.returncode == 0, validate.stderr
        assert "user:***@" in validate.stdout

        cmd = [SHARDLINE, "run", "--allow-dead-letters", str(config)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert sum(len(rs) for rs in read_stream(stream).values()) == 2  # the key did authenticate

        persisted = {
            "checkpoint": (tmp_path / "run.ckpt").read_bytes(),
            "dead letters": (tmp_path / "dead.jsonl").read_bytes(),
        }
        assert b"user:***@" in persisted["dead letters"]
        printed = {"validate": validate.stdout + validate.stderr, "run": run.stdout + run.stderr}
        for where, blob in persisted.items():
            assert KEY.encode() not in blob, where
        for where, text in printed.items():
            assert KEY not in text, where


def test_the_checkpoint_identity_does_not_depend_on_the_key(tmp_path: Path) -> None:
    config = _pipeline(tmp_path, "http://user:one@127.0.0.1:8081/bigdata/s")
    first = load_pipeline(config).fingerprint()
    second = load_pipeline(config, ["sink.stream=http://user:two@127.0.0.1:8081/bigdata/s"]).fingerprint()
    other_stream = load_pipeline(config, ["sink.stream=http://user:one@127.0.0.1:8081/bigdata/t"])
    assert first == second
    assert other_stream.fingerprint() != first
    v3io_one = load_pipeline(config, ["sink.stream=v3io:///bigdata/s?access_key=one"]).fingerprint()
    v3io_two = load_pipeline(config, ["sink.stream=v3io:///bigdata/s?access_key=two"]).fingerprint()
    assert v3io_one == v3io_two
