"""shardline_v3io."""
