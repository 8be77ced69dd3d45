"""The durable stream store: per-shard append-only segments with a dense offset index.

See :mod:`shardline_v3io.store.format` for the files and :mod:`shardline_v3io.store.store` for the
directory layout.
"""

from shardline_v3io.store.errors import StoreError
from shardline_v3io.store.shard import ShardLog
from shardline_v3io.store.store import ListEntry, Listing, StreamStore
from shardline_v3io.store.stream import Stream, StreamMeta

__all__ = ["ListEntry", "Listing", "ShardLog", "StoreError", "Stream", "StreamMeta", "StreamStore"]
