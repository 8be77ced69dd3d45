"""A newcomer's first hour: what the README's commands print and refuse, each against real parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import count
from pathlib import Path
from typing import Any

import click
import pytest
from shardline.config import load_pipeline, read_document
from shardline.errors import ConfigError
from shardline_parquet import write_sample
from shardline_v3io.urls import parse_stream_url

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
_names = count()


def _cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHARDLINE, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _stream(server: Any) -> str:
    return f"{server.url}/bigdata/first-hour-{next(_names)}-{os.getpid()}"


def test_stream_get_with_sequence_alone_starts_at_that_sequence(stream_server_session: Any) -> None:
    url = _stream(stream_server_session)
    assert _cli("stream", "create", url, "--shards", "1").returncode == 0
    assert _cli("stream", "put", url, "a", "b", "c").returncode == 0
    got = _cli("stream", "get", url, "--sequence", "2")
    assert got.returncode == 0, got.stderr
    assert [json.loads(line)["data"] for line in got.stdout.splitlines()] == ["b", "c"]


def test_stream_get_refuses_a_sequence_with_another_seek(stream_server_session: Any) -> None:
    got = _cli("stream", "get", _stream(stream_server_session), "--sequence", "2", "--seek", "latest")
    assert got.returncode != 0
    assert "--sequence starts at a sequence, not at --seek latest" in got.stderr


def test_every_option_of_every_command_has_help_text() -> None:
    from shardline.cli import _build

    missing: list[str] = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        missing.extend(
            f"{' '.join(path)} {param.opts[0]}"
            for param in command.params
            if isinstance(param, click.Option) and not param.help
        )

    walk(_build(), ["shardline"])
    assert missing == []


def _pipeline(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_json_pipeline_is_read_as_json(tmp_path: Path) -> None:
    doc = {"source": {"type": "parquet", "path": "x"}, "sink": {"stream": "http://127.0.0.1:1/c/s"}}
    config = load_pipeline(_pipeline(tmp_path, "p.json", json.dumps(doc)))
    assert config.source_type == "parquet"
    assert config.sink.stream == "http://127.0.0.1:1/c/s"


def test_a_key_given_twice_in_a_json_pipeline_is_refused(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "p.json", '{"source": {"type": "parquet", "type": "kafka"}}')
    with pytest.raises(ConfigError, match=r"p\.json: invalid JSON: duplicate key 'type'"):
        read_document(path)


def test_a_key_given_twice_in_a_yaml_pipeline_is_refused_like_toml(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "p.yaml", "source:\n  type: parquet\n  type: kafka\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: invalid YAML: duplicate key 'type' \(at line 3"):
        read_document(path)


def test_a_local_url_whose_container_is_an_existing_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "some" / "dir").mkdir(parents=True)
    with pytest.raises(ConfigError, match="names no container"):
        parse_stream_url(f"local://{tmp_path}/some/dir/stream")
    assert not (tmp_path / "some" / "shardline-store.json").exists()


def test_a_local_url_with_a_new_container_still_names_a_new_store(tmp_path: Path) -> None:
    parsed = parse_stream_url(f"local://{tmp_path}/store/bigdata/s")
    assert (parsed.local_dir, parsed.container, parsed.path) == (f"{tmp_path}/store", "bigdata", "s")


def test_create_shards_on_an_existing_stream_is_noticed_at_start(
    stream_server_session: Any, tmp_path: Path
) -> None:
    url = _stream(stream_server_session)
    assert _cli("stream", "create", url, "--shards", "2").returncode == 0
    write_sample(tmp_path / "events", 100, files=1)
    pipeline = _pipeline(
        tmp_path,
        "p.toml",
        f'[source]\ntype = "parquet"\npath = "events"\n[sink]\nstream = "{url}"\ncreate = {{ shards = 4 }}\n',
    )
    run = _cli("run", str(pipeline), "--set", "sink.create.shards=16", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"notice: {url} already exists with 2 shards" in run.stderr
    assert "create (shards = 16) applies only to a missing stream" in run.stderr


def test_no_notice_when_the_run_creates_the_stream(stream_server_session: Any, tmp_path: Path) -> None:
    url = _stream(stream_server_session)
    write_sample(tmp_path / "events", 100, files=1)
    pipeline = _pipeline(
        tmp_path,
        "p.toml",
        f'[source]\ntype = "parquet"\npath = "events"\n[sink]\nstream = "{url}"\ncreate = {{ shards = 3 }}\n',
    )
    run = _cli("run", str(pipeline), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "notice:" not in run.stderr  # (the tmp path holds the word "notice")


def test_rich_output_is_not_wrapped_at_80_columns_in_a_pipe() -> None:
    code = "from shardline.progress import make_console; print(make_console().width)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "200"


def test_the_demo_suggests_uv_run_under_uv_run_and_the_script_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shardline_v3io.demo import shardline_command

    monkeypatch.setenv("UV", "/usr/bin/uv")
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    assert shardline_command() == "uv run shardline"
    monkeypatch.delenv("UV")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shardline_command() == str(Path(sys.prefix) / "bin" / "shardline")
