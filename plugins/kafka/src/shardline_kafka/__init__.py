"""shardline_kafka."""
