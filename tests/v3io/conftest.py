"""Fixtures of the v3io connector tests: servers with options, in-process for speed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shardline_v3io.testing_server import RunningServer, start_server_thread


@pytest.fixture
def thread_server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start in-process servers with options (``access_key=``, ``fault_rate=``...); stopped afterwards."""
    started: list[RunningServer] = []

    def make(data_dir: Path | None = None, **options: Any) -> RunningServer:
        server = start_server_thread(data_dir or tmp_path / f"data-{len(started)}", **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
