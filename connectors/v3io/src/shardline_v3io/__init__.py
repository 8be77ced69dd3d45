"""shardline-v3io: the v3io Streaming Web API connector and the embedded v3io-compatible stream server.

Public names (imported lazily, so loading the plugin stays cheap):

- :class:`V3ioClient` — async client of the Streaming Web API
- :class:`StreamStore` — the durable store behind ``shardline serve`` and ``local://``
- :class:`LocalTransport` — ``local://`` URLs, the store in-process
- :func:`parse_stream_url`, :class:`StreamURL` — stream URLs
- :func:`start_server`, :func:`start_server_thread` — run the real server in tests
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "V3ioClient": "shardline_v3io.client",
    "GetRecordsResult": "shardline_v3io.client",
    "StreamRecord": "shardline_v3io.client",
    "StreamStore": "shardline_v3io.store",
    "LocalTransport": "shardline_v3io.local",
    "parse_stream_url": "shardline_v3io.urls",
    "StreamURL": "shardline_v3io.urls",
    "start_server": "shardline_v3io.testing_server",
    "start_server_thread": "shardline_v3io.testing_server",
    "RunningServer": "shardline_v3io.testing_server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shardline_v3io' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
