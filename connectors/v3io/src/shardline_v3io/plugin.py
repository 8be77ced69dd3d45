"""Plugin hooks of shardline_v3io: the ``serve``, ``stream`` and ``demo`` commands and the transports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardline.hookspecs import hookimpl


@hookimpl
def shardline_register_commands(cli: Any) -> None:
    """Add ``serve`` (the embedded stream server) to the ``shardline`` command."""
    from shardline_v3io.commands import serve_command

    cli.add_command(serve_command)


@hookimpl
def shardline_register_transports(register: Callable[[str, Any], None]) -> None:
    """Register ``local://`` (the store in-process)."""
    # http, https and v3io: the v3io Web API transport (imported on first use)
    for scheme in ("http", "https", "v3io"):
        register(scheme, _v3io_transport)


def _v3io_transport(url: str, **options: Any) -> Any:
    """Factory of :class:`shardline_v3io.transport.V3ioTransport` (imports aiohttp only when used)."""
    from shardline_v3io.transport import V3ioTransport

    return V3ioTransport(url, **options)
