"""shardline connector for Amazon Kinesis Data Streams."""
