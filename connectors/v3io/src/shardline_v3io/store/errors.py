"""The exception the store raises: a v3io error kind plus a human-readable detail."""

from __future__ import annotations

from shardline_v3io.errors import V3ioError


class StoreError(Exception):
    """An operation on the store failed with a protocol error (``kind``) and a ``detail`` for humans."""

    def __init__(self, kind: V3ioError, detail: str) -> None:
        super().__init__(f"{kind.name}: {detail}")
        self.kind = kind
        self.detail = detail
