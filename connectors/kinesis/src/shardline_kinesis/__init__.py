"""shardline connector for Amazon Kinesis Data Streams.

- :mod:`shardline_kinesis.transport` — ``kinesis://STREAM-NAME`` (:class:`KinesisTransport`, its options)
- :mod:`shardline_kinesis.wire` — the PutRecords wire: limits, fragments, bodies, outcomes
- :mod:`shardline_kinesis.client` — the async JSON 1.1 client (SigV4 via botocore, one aiohttp pool)
- :mod:`shardline_kinesis.aggregation` — KPL-compatible aggregation (``aggregate = true``)
- :mod:`shardline_kinesis.access` — ``shardline stream ...`` on kinesis:// URLs
- :mod:`shardline_kinesis.testing` — pytest fixtures (kinesalite, kinesis-local, fault proxy, null endpoint)

Nothing is imported here, so loading the plugin costs nothing until a kinesis:// URL is used.
"""
