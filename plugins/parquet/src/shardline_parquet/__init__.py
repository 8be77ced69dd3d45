"""shardline_parquet: the Parquet file/directory/glob source of shardline."""

from __future__ import annotations

from shardline_parquet.sample import write_sample
from shardline_parquet.source import ParquetAckToken, ParquetOptions, ParquetSource

__all__ = ["ParquetAckToken", "ParquetOptions", "ParquetSource", "write_sample"]
