"""`shardline serve` never serves open by accident: an empty key is refused, not taken as "no auth"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from shardline_v3io.testing_server import start_server


def _serve(tmp_path: Path, *args: str, env_key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHARDLINE_ACCESS_KEY"}
    if env_key is not None:
        env["SHARDLINE_ACCESS_KEY"] = env_key
    cmd = [sys.executable, "-m", "shardline_v3io", "serve", "--data-dir", str(tmp_path / "d"), "--port", "0"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    ("args", "env_key", "named"),
    [
        (("--access-key", ""), None, "--access-key"),
        (("--access-key", "   "), None, "--access-key"),
        ((), "", "SHARDLINE_ACCESS_KEY"),
        ((), " \t", "SHARDLINE_ACCESS_KEY"),
    ],
)
def test_an_empty_access_key_is_refused_with_one_line(
    tmp_path: Path, args: tuple[str, ...], env_key: str | None, named: str
) -> None:
    proc = _serve(tmp_path, *args, env_key=env_key)
    assert proc.returncode != 0
    assert "listening on" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "empty" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_key_from_the_environment_is_required(tmp_path: Path) -> None:
    with start_server(tmp_path / "d", env={"SHARDLINE_ACCESS_KEY": "k"}) as server:
        url = f"{server.url}/bigdata/s/"
        assert requests.put(url, headers={"X-v3io-function": "DescribeStream"}).status_code == 403
        ok = requests.put(url, headers={"X-v3io-function": "DescribeStream", "X-v3io-session-key": "k"})
        assert ok.status_code == 404


def test_stream_commands_use_a_key_in_the_url_but_never_print_it(tmp_path: Path) -> None:
    key = "k3y-in-the-url-0815"
    with start_server(tmp_path / "d", access_key=key) as server:
        url = f"http://user:{key}@{server.url.removeprefix('http://')}/bigdata/s"
        outputs = []
        for args in (
            ["create", url, "--shards", "2"],
            ["create", url, "--if-not-exists"],
            ["put", url, "hello"],
            ["update", url, "--shards", "3"],
            ["delete", url],
            ["delete", url],
        ):
            cmd = [sys.executable, "-m", "shardline_v3io", "stream", *args]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            outputs.append((proc.returncode, proc.stdout + proc.stderr))
        assert [code for code, _ in outputs] == [0, 0, 0, 0, 0, 1]  # the key authenticated
        for _code, text in outputs:
            assert key not in text, text
        assert outputs[0][1].startswith("created http://user:***@")
