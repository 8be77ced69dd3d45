"""Plugin hooks of shardline_v3io."""
