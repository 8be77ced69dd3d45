"""Plugin hooks of shardline_parquet: registers the ``parquet`` source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import shardline


@shardline.hookimpl
def shardline_register_sources(register: Callable[[str, type[Any]], None]) -> None:
    """Register :class:`shardline_parquet.source.ParquetSource` as ``parquet``."""
    from shardline_parquet.source import ParquetSource

    register("parquet", ParquetSource)
