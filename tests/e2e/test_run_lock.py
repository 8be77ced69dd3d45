"""One run of a pipeline at a time: `shardline run` locks the checkpoint; a second run refuses at once.

The first run is held inside the sink's connect by a listener that accepts connections and never
answers, so it keeps its lock for as long as the test needs; it is then killed with SIGKILL, and a
new run (pointed at the real embedded server with ``--set``) starts and delivers everything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from shardline_parquet import write_sample
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import start_server_thread

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
ROWS = 2_000


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT of a listener that takes connections (kernel backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _config(tmp_path: Path, endpoint: str) -> Path:
    data = tmp_path / "data"
    if not data.exists():
        write_sample(data, ROWS, files=1, row_group_size=500)
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f"""
[source]
type = "parquet"
path = "{data}"

[sink]
stream = "{endpoint}/bigdata/locked"
create = {{ shards = 2 }}

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{tmp_path / "run.ckpt"}"
"""
    )
    return config


def _wait_for_lock_holder(lock: Path, pid: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the first run ended early: {proc.communicate()}"
        try:
            if json.loads(lock.read_text() or "{}").get("pid") == pid:
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)  # polling the lock file, with the deadline above
    raise AssertionError(f"{lock} never named pid {pid}")


def test_a_second_run_refuses_at_once_naming_the_first_and_a_run_after_kill_9_starts(
    tmp_path: Path, silent_endpoint: str
) -> None:
    config = _config(tmp_path, silent_endpoint)
    first = subprocess.Popen([SHARDLINE, "run", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lock_holder(tmp_path / "run.ckpt.lock", first.pid, first)

        started = time.monotonic()
        second = subprocess.run([SHARDLINE, "run", str(config)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert "is in use by another run of this pipeline" in message
        assert f"pid {first.pid} on host {socket.gethostname()} since " in message
        assert time.monotonic() - started < 30  # refused at once, not after the first run's timeouts

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
        first.stdout.close()  # type: ignore[union-attr]
        first.stderr.close()  # type: ignore[union-attr]

    with start_server_thread(tmp_path / "store") as server:
        third = subprocess.run(
            [SHARDLINE, "run", str(config), "--set", f"sink.stream={server.url}/bigdata/locked"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert third.returncode == 0, third.stderr
        assert f"shardline: {ROWS:,} records" in third.stdout
        assert sum(len(r) for r in read_stream(f"{server.url}/bigdata/locked").values()) == ROWS
