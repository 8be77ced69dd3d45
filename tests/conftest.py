"""Root fixtures: the real embedded stream server (``shardline serve``) on a free port.

``stream_server``          a fresh server and data dir per test (subprocess).
``stream_server_session``  one server for the whole session (subprocess); use unique stream names.
Both yield a :class:`shardline_v3io.testing_server.RunningServer` (``.url``, ``.pid``, ``.kill()``,
``.stop()``, ``.data_dir``). The same fixtures are available to plugin authors from
``shardline.testing``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from shardline_v3io.testing_server import RunningServer, start_server


@pytest.fixture
def stream_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh embedded stream server with its own data dir, stopped after the test."""
    server = start_server(tmp_path / "stream-data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stream_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded stream server shared by the session (use unique stream names per test)."""
    server = start_server(tmp_path_factory.mktemp("stream-data-session"))
    try:
        yield server
    finally:
        server.stop()
