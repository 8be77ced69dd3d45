"""shardline_parquet: the Parquet file/directory/glob source of shardline."""

from __future__ import annotations

from shardline_parquet.sample import write_sample
from shardline_parquet.source import ParquetAckToken, ParquetCheckpoint, ParquetOptions, ParquetSource

__all__ = ["ParquetAckToken", "ParquetCheckpoint", "ParquetOptions", "ParquetSource", "write_sample"]
