"""Root of the test suite.

The real embedded stream server fixtures come from ``shardline_v3io.testing`` (a pytest plugin that
the ``shardline-v3io`` distribution registers, so plugin authors get the very same ones):

``shardline_stream_server``          a fresh server and data dir per test (subprocess).
``shardline_stream_server_session``  one server for the whole session (subprocess); use unique
                                     stream names.

Both yield a :class:`shardline_v3io.testing_server.RunningServer` (``.url``, ``.pid``, ``.kill()``,
``.stop()``, ``.data_dir``). The Kafka broker fixture (``shardline_kafka_broker``) comes from
``shardline_kafka.testing`` the same way.

The installed plugins only offer ``shardline_``-prefixed names (a fixture called ``sink`` would
silently satisfy unrelated tests of other projects). This suite's tests use the short names, which
are aliases defined here, for this repository only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def stream_server(shardline_stream_server: Any) -> Iterator[Any]:
    """Alias of ``shardline_stream_server``."""
    yield shardline_stream_server


@pytest.fixture(scope="session")
def stream_server_session(shardline_stream_server_session: Any) -> Iterator[Any]:
    """Alias of ``shardline_stream_server_session``."""
    yield shardline_stream_server_session


@pytest.fixture
def fake_transport(shardline_fake_transport: Any) -> Any:
    """Alias of ``shardline_fake_transport``."""
    return shardline_fake_transport


@pytest.fixture
def sink(shardline_sink: Any) -> Iterator[Any]:
    """Alias of ``shardline_sink``."""
    yield shardline_sink


@pytest.fixture(scope="session")
def kafka_broker(shardline_kafka_broker: Any) -> Iterator[Any]:
    """Alias of ``shardline_kafka_broker``."""
    yield shardline_kafka_broker
