"""Plugin hooks of shardline_kafka."""
