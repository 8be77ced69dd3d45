"""Test kit for plugin authors (a pytest plugin, loaded automatically): fixtures and a fake transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# --- the embedded stream server (shardline-v3io), for tests that talk to a real stream -------------


def start_stream_server(data_dir: str | Path, **server_options: Any) -> Any:
    """Start ``shardline serve`` in a subprocess on a free port (see ``shardline_v3io.testing_server``)."""
    from shardline_v3io.testing_server import start_server

    return start_server(data_dir, **server_options)


@pytest.fixture
def stream_server(tmp_path: Path) -> Iterator[Any]:
    """A fresh embedded stream server (``.url``, ``.pid``, ``.kill()``, ``.stop()``), stopped afterwards."""
    server = start_stream_server(tmp_path / "stream-data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stream_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded stream server for the whole session (use unique stream names per test)."""
    server = start_stream_server(tmp_path_factory.mktemp("stream-data-session"))
    try:
        yield server
    finally:
        server.stop()
