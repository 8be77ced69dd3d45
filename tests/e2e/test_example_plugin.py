"""The out-of-tree example plugin (examples/plugin-http-poll): installs with pip, shows up, runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from shardline import plugins
from shardline.testing import check_source
from shardline_v3io.testing import read_stream

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "plugin-http-poll"
SHARDLINE = str(Path(sys.executable).with_name("shardline"))


class _Events:
    """A JSON endpoint: GET /events?since=N -> {"items": [records with id > N, at most 100]}."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.requests = 0

    def page(self, since: int) -> list[dict[str, Any]]:
        ids = range(since + 1, min(since + 100, self.total) + 1)
        return [{"id": i, "user": f"u{i % 7}", "value": i * 1.5} for i in ids]


@pytest.fixture
def endpoint() -> Iterator[tuple[str, _Events]]:
    events = _Events(total=250)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            events.requests += 1
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            body = json.dumps({"items": events.page(int(query.get("since", ["0"])[0]))}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/events", events
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed with pip semantics (built as a wheel) into a directory of its own.

    Installing into a target directory, put on PYTHONPATH of the processes that use it, leaves the
    project's environment untouched.
    """
    target = tmp_path_factory.mktemp("plugin-site")
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is needed to install the example plugin (the README's commands install it)"
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--no-deps",
            "--python",
            sys.executable,
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "shardline_http_poll.py").exists()
    return target


def _env(site: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }


def test_the_installed_plugin_is_listed_by_shardline_plugins(installed: Path) -> None:
    proc = subprocess.run(
        [SHARDLINE, "plugins"], capture_output=True, text=True, env=_env(installed), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "http-poll (shardline-http-poll)  source:http-poll" in proc.stdout
    assert "parquet (shardline-parquet)  source:parquet" in proc.stdout


def test_a_pipeline_runs_with_the_plugin_and_resumes_from_its_cursor(
    installed: Path, endpoint: tuple[str, _Events], stream_server_session: Any, tmp_path: Path
) -> None:
    url, events = endpoint
    stream = f"{stream_server_session.url}/bigdata/plugin-http-poll"
    config = tmp_path / "poll.toml"
    config.write_text(
        f"""
[source]
type = "http-poll"
url = "{url}"
records_key = "items"
cursor_field = "id"
interval_s = 0.05
stop_when_empty = true

[sink]
stream = "{stream}"
create = {{ shards = 2 }}

[mapping]
partition_key = "user"

[checkpoint]
path = "{tmp_path / "poll.ckpt"}"
"""
    )
    run = [SHARDLINE, "run", str(config)]
    proc = subprocess.run(run, capture_output=True, text=True, env=_env(installed), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("shardline: 250 records, ")

    events.total = 320  # new records appear; the next run asks only for what follows the last ack
    proc = subprocess.run(run, capture_output=True, text=True, env=_env(installed), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("shardline: 70 records, ")

    ids = sorted(json.loads(r.data)["id"] for rs in read_stream(stream).values() for r in rs)
    assert ids == list(range(1, 321))


def test_the_plugin_passes_the_source_conformance_check(
    installed: Path, endpoint: tuple[str, _Events], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(installed))
    plugins.reset_plugins()
    try:
        source_cls = plugins.lookup("sources", "http-poll")
        url, _events = endpoint
        options = {"url": url, "records_key": "items", "cursor_field": "id", "stop_when_empty": True}
        facts = check_source(source_cls, options)
        assert facts == {"batches": 3, "rows": 250}
    finally:
        plugins.reset_plugins()
        sys.modules.pop("shardline_http_poll", None)
