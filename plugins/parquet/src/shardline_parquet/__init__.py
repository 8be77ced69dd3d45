"""shardline_parquet."""
