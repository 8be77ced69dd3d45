"""Plugin hooks of shardline_kafka: registers the ``kafka`` source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import shardline


@shardline.hookimpl
def shardline_register_sources(register: Callable[[str, type[Any]], None]) -> None:
    """Register :class:`~shardline_kafka.source.KafkaSource` as ``[source] type = "kafka"``."""
    from shardline_kafka.source import KafkaSource

    register("kafka", KafkaSource)
