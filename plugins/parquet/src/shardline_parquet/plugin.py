"""Plugin hooks of shardline_parquet."""
