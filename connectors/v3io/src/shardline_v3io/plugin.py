"""Plugin hooks of shardline_v3io: the ``serve``, ``stream`` and ``demo`` commands and the transports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field
from shardline import TransportOptions, hookimpl

from shardline_v3io.urls import MAX_SHARDS, validate_stream_url  # light: no aiohttp, no store


class V3ioTransportOptions(TransportOptions):
    """``[sink.transport]`` of ``http://``, ``https://`` and ``v3io://`` streams."""

    max_connections: int = Field(64, ge=1, description="connections kept open to the endpoint")
    timeout: float = Field(60.0, gt=0, description="seconds per request")


class LocalTransportOptions(TransportOptions):
    """``[sink.transport]`` of ``local://`` streams (the store in-process)."""

    fsync: bool = Field(False, description="fsync each write before acknowledging it")


@hookimpl
def shardline_register_commands(cli: Any) -> None:
    """Add ``serve`` (the embedded stream server), ``stream`` and ``demo`` to the ``shardline`` command."""
    from shardline_v3io.commands import serve_command
    from shardline_v3io.demo import demo_command
    from shardline_v3io.stream_commands import stream_group

    cli.add_command(serve_command)
    cli.add_command(stream_group)
    if "demo" not in cli.commands:  # a later pipeline demo may own the name
        cli.add_command(demo_command)


@hookimpl
def shardline_register_transports(register: Callable[[str, Any], None]) -> None:
    """Register ``local://`` (the store in-process) and the v3io Web API schemes."""
    register("local", _local_transport)
    # http, https and v3io: the v3io Web API transport (imported on first use)
    for scheme in ("http", "https", "v3io"):
        register(scheme, _v3io_transport)


def _local_transport(url: str, **options: Any) -> Any:
    """Factory of :class:`shardline_v3io.local.LocalTransport` (the stream store in-process)."""
    from shardline_v3io.local import LocalTransport

    return LocalTransport(url, **options)


_local_transport.Options = LocalTransportOptions  # type: ignore[attr-defined]
_local_transport.validate = validate_stream_url  # type: ignore[attr-defined]
_local_transport.max_shards = MAX_SHARDS  # type: ignore[attr-defined]


def _v3io_transport(url: str, **options: Any) -> Any:
    """Factory of :class:`shardline_v3io.transport.V3ioTransport` (imports aiohttp only when used)."""
    from shardline_v3io.transport import V3ioTransport

    return V3ioTransport(url, **options)


def _web_api_identity(url: str) -> str:
    """A stream's identity in checkpoints: ``http:CONTAINER/PATH``, without the host:port (a local
    server may come back on another port)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in ("http", "https"):
        rest = rest.partition("/")[2]
    return f"{scheme}:{rest.strip('/')}"


_v3io_transport.Options = V3ioTransportOptions  # type: ignore[attr-defined]
_v3io_transport.identity = _web_api_identity  # type: ignore[attr-defined]
_v3io_transport.validate = validate_stream_url  # type: ignore[attr-defined]
_v3io_transport.max_shards = MAX_SHARDS  # type: ignore[attr-defined]
