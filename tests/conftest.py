"""Root of the test suite.

The real embedded stream server fixtures come from ``shardline.testing`` (a pytest plugin that the
``shardline`` distribution registers, so plugin authors get the very same ones):

``stream_server``          a fresh server and data dir per test (subprocess).
``stream_server_session``  one server for the whole session (subprocess); use unique stream names.

Both yield a :class:`shardline_v3io.testing_server.RunningServer` (``.url``, ``.pid``, ``.kill()``,
``.stop()``, ``.data_dir``). The Kafka broker fixture (``kafka_broker``) comes from
``shardline_kafka.testing`` the same way.
"""
