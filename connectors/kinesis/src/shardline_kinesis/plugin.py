"""Plugin hooks of shardline_kinesis: the ``kinesis://`` transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardline import hookimpl

from shardline_kinesis.transport import KinesisOptions, validate  # light: no aiohttp, no botocore


@hookimpl
def shardline_register_transports(register: Callable[[str, Any], None]) -> None:
    """Register ``kinesis://STREAM-NAME?region=..&endpoint_url=..``."""
    register("kinesis", _kinesis_transport)


def _kinesis_transport(url: str, **options: Any) -> Any:
    """Factory of :class:`shardline_kinesis.transport.KinesisTransport`."""
    from shardline_kinesis.transport import KinesisTransport

    return KinesisTransport(url, **options)


def _stream_access(url: str, *, access_key: str | None = None) -> Any:
    """What ``shardline stream ...`` uses for a ``kinesis://`` URL (``access_key`` is not used:
    credentials come from the AWS chain)."""
    from shardline_kinesis.access import KinesisAccess

    return KinesisAccess(url)


_kinesis_transport.Options = KinesisOptions  # type: ignore[attr-defined]
_kinesis_transport.validate = validate  # type: ignore[attr-defined]
_kinesis_transport.max_shards = 10_000  # type: ignore[attr-defined]
_kinesis_transport.stream_access = _stream_access  # type: ignore[attr-defined]


def _wire_limits() -> Any:
    """The Kinesis :class:`~shardline.wire.WireLimits` (imported on first use: numpy, pyarrow)."""
    from shardline_kinesis.wire import KINESIS_LIMITS

    return KINESIS_LIMITS


_kinesis_transport.wire_limits = _wire_limits  # type: ignore[attr-defined]
