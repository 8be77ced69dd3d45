"""The plugin registrations of shardline-kinesis (filled in by the connector)."""
