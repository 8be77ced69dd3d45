"""Pytest fixtures for the embedded v3io-compatible stream server (a pytest plugin, loaded
automatically with shardline-v3io), and a helper to read a stream back.

``shardline_stream_server``          a fresh embedded stream server per test (a subprocess).
``shardline_stream_server_session``  one embedded stream server for the whole session (use unique
                                     stream names per test).

Both yield a :class:`shardline_v3io.testing_server.RunningServer` (``.url``, ``.pid``,
``.kill()``, ``.stop()``, ``.data_dir``). This module is loaded by every pytest run of a project
that has shardline-v3io installed, so it imports nothing but pytest at start: the server and the
client (aiohttp, numpy) are imported inside the fixtures and helpers that need them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["read_stream", "start_stream_server"]


# --- the embedded stream server (shardline-v3io), for tests that talk to a real stream -------------


def start_stream_server(data_dir: str | Path, **server_options: Any) -> Any:
    """Start ``shardline serve`` in a subprocess on a free port (see :mod:`shardline_v3io.testing_server`)."""
    from shardline_v3io.testing_server import start_server  # imported here: the plugin stays light

    return start_server(data_dir, **server_options)


@pytest.fixture
def shardline_stream_server(tmp_path: Path) -> Iterator[Any]:
    """A fresh embedded stream server (``.url``, ``.pid``, ``.kill()``, ``.stop()``), stopped afterwards."""
    server = start_stream_server(tmp_path / "stream-data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shardline_stream_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded stream server for the whole session (use unique stream names per test)."""
    server = start_stream_server(tmp_path_factory.mktemp("stream-data-session"))
    try:
        yield server
    finally:
        server.stop()


# --- reading a stream back, for end-to-end tests ----------------------------------------------------


def read_stream(url: str, *, access_key: str | None = None) -> dict[int, list[Any]]:
    """Every record of the stream at ``url`` (``http://HOST:PORT/CONTAINER/STREAM``), per shard id,
    in sequence order: a dict shard -> list of ``shardline_v3io.client.StreamRecord``.

    For tests of small streams (it holds everything in memory). Needs ``shardline-v3io``.
    """
    import asyncio

    from shardline_v3io.client import V3ioClient
    from shardline_v3io.urls import parse_stream_url

    parsed = parse_stream_url(url, access_key=access_key)
    assert parsed.endpoint is not None, "read_stream needs an http(s):// stream URL"
    endpoint = parsed.endpoint

    async def main() -> dict[int, list[Any]]:
        async with V3ioClient(endpoint, parsed.access_key) as client:
            info = await client.describe_stream(parsed.container, parsed.path)
            shards: dict[int, list[Any]] = {}
            for shard in range(info.shard_count):
                location = await client.seek(parsed.container, parsed.path, shard, "EARLIEST")
                records: list[Any] = []
                while True:
                    result = await client.get_records(parsed.container, parsed.path, shard, location, 1000)
                    records.extend(result.records)
                    location = result.next_location
                    if not result.records and result.records_behind_latest == 0:
                        break
                shards[shard] = records
            return shards

    return asyncio.run(main())
