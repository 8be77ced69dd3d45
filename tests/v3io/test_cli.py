"""``shardline serve`` and ``shardline stream ...`` as people run them.

The stream commands run in-process through click's runner (a CLI start costs seconds of imports on a
loaded machine); one test runs the real entry point in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from click.testing import CliRunner, Result
from shardline_v3io.__main__ import main
from shardline_v3io.testing_server import RunningServer, start_server


def _cli(*args: str, stdin: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


def test_entry_point_in_a_subprocess(stream_server_session: RunningServer) -> None:
    url = f"{stream_server_session.url}/bigdata/cli-sub-{uuid.uuid4().hex[:6]}"
    run = subprocess.run(
        [sys.executable, "-m", "shardline_v3io", "stream", "create", url, "--shards", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"created {url}: 2 shards, retention 24 h"
    missing = subprocess.run(
        [sys.executable, "-m", "shardline_v3io", "stream", "describe", url + "-missing"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ") and len(missing.stderr.strip().splitlines()) == 1


def test_stream_commands_round_trip_over_http(stream_server_session: RunningServer) -> None:
    url = f"{stream_server_session.url}/bigdata/cli/{uuid.uuid4().hex[:8]}"
    created = _cli("stream", "create", url, "--shards", "3", "--retention-hours", "12")
    assert created.exit_code == 0, created.stderr
    again = _cli("stream", "create", url, "--shards", "3")
    assert again.exit_code == 1 and again.stderr.startswith("error: ") and "already exists" in again.stderr
    assert _cli("stream", "create", url, "--if-not-exists").exit_code == 0
    desc = _cli("stream", "describe", url)
    assert json.loads(desc.stdout) == {"url": url, "shards": 3, "retention_hours": 12}
    put = _cli("stream", "put", url, "--key", "alice", "-v", stdin="one\ntwo\nthree\n")
    assert put.exit_code == 0, put.stderr
    lines = [json.loads(line) for line in put.stdout.splitlines() if line.startswith("{")]
    assert [x["sequence"] for x in lines] == [1, 2, 3] and len({x["shard"] for x in lines}) == 1
    shard = lines[0]["shard"]
    assert _cli("stream", "put", url, "--shard", str(shard), "four", "five").exit_code == 0
    got = _cli("stream", "get", url)
    records = [json.loads(line) for line in got.stdout.splitlines()]
    assert [r["data"] for r in records] == ["one", "two", "three", "four", "five"]
    assert [r["partition_key"] for r in records] == ["alice"] * 3 + [None, None]
    assert {r["shard"] for r in records} == {shard}
    some = _cli(
        "stream", "get", url, "--shard", str(shard), "--seek", "sequence", "--sequence", "4", "--limit", "1"
    )
    assert [json.loads(line)["data"] for line in some.stdout.splitlines()] == ["four"]
    latest = _cli("stream", "get", url, "--seek", "latest")
    assert latest.exit_code == 0 and latest.stdout == ""
    assert _cli("stream", "update", url, "--shards", "5").exit_code == 0
    assert json.loads(_cli("stream", "describe", url).stdout)["shards"] == 5
    shrink = _cli("stream", "update", url, "--shards", "2")
    assert shrink.exit_code == 1 and "can only grow" in shrink.stderr
    assert _cli("stream", "delete", url).exit_code == 0
    gone = _cli("stream", "describe", url)
    assert gone.exit_code == 1 and "not found" in gone.stderr


def test_v3io_url_takes_endpoint_and_key_from_env(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", access_key="k3y")
    try:
        env = {"V3IO_API": server.url.removeprefix("http://"), "V3IO_ACCESS_KEY": "k3y"}
        name = f"v3io:///bigdata/env-{uuid.uuid4().hex[:6]}"
        assert _cli("stream", "create", name, env=env).exit_code == 0
        assert _cli("stream", "put", name, "x", env=env).exit_code == 0
        got = _cli("stream", "get", name, env=env)
        assert [json.loads(line)["data"] for line in got.stdout.splitlines()] == ["x"]
        denied = _cli("stream", "describe", name, env={**env, "V3IO_ACCESS_KEY": "wrong"})
        assert denied.exit_code == 1 and "access denied" in denied.stderr
        # binary data comes back as base64
        assert _cli("stream", "put", name, env=env, stdin=b"\xff\xfe\n").exit_code == 0
        got = _cli("stream", "get", name, "--seek", "sequence", "--sequence", "2", env=env)
        assert json.loads(got.stdout)["data_base64"] == "//4="
    finally:
        server.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        assert server.process.wait(timeout=60) == 0  # type: ignore[union-attr]


def test_local_urls_need_no_server(tmp_path: Path) -> None:
    url = f"local://{tmp_path}/store/bigdata/s"
    assert _cli("stream", "create", url, "--shards", "2").exit_code == 0
    assert (tmp_path / "store" / "shardline-store.json").is_file()
    assert _cli("stream", "put", url, "--key", "k", "a", "b").exit_code == 0
    got = _cli("stream", "get", url)
    assert [json.loads(line)["data"] for line in got.stdout.splitlines()] == ["a", "b"]
    nested = f"local://{tmp_path}/store/bigdata/deeper/stream"
    assert _cli("stream", "create", nested).exit_code == 0
    assert (tmp_path / "store" / "bigdata" / "deeper" / "stream").is_dir()


def test_serve_rejects_bad_options_with_one_line(tmp_path: Path) -> None:
    bad = _cli("serve", "--data-dir", str(tmp_path), "--fault-rate", "2")
    assert bad.exit_code == 1
    assert bad.output.strip() == "error: --fault-rate must be a fraction within [0, 1] (0.3 = 30%), got 2.0"


def test_demo_backfills_sample_parquet_and_reads_it_back(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "examples" / "backfill.toml"
    args = ("demo", "--data-dir", str(tmp_path / "demo"), "--config", str(config), "--shards", "4")
    result = _cli(*args, "--rows", "3000")
    assert result.exit_code == 0, result.output
    assert "read back 3,000 of 3,000 records: 0 duplicates, 0 users out of order" in result.output
    assert (tmp_path / "demo" / "server" / "bigdata" / "demo" / "events").is_dir()
    again = _cli(*args, "--rows", "500")  # re-runs start from a fresh stream and checkpoint
    assert again.exit_code == 0, again.output
    assert "read back 500 of 500 records" in again.output


def test_demo_without_its_pipeline_file_says_what_to_do(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--data-dir", str(tmp_path), "--config", str(tmp_path / "nope.toml")]
    )
    assert result.exit_code == 1
    assert "no such pipeline file" in result.output
