"""Connecting to a Dask cluster: a scheduler address, or ``local:N`` worker processes on loopback."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shardline import ConfigError

_LOCAL = re.compile(r"^local:(\d{1,4})$")


def local_workers(address: str) -> int | None:
    """N for ``local:N``, None for a scheduler address; :class:`~shardline.ConfigError` for ``local:0``."""
    match = _LOCAL.match(address.strip())
    if match is None:
        if address.strip().startswith("local:"):
            raise ConfigError(f"engine.address: {address!r}: expected local:N with N >= 1 (e.g. local:4)")
        return None
    workers = int(match.group(1))
    if workers < 1:
        raise ConfigError(f"engine.address: {address!r}: expected local:N with N >= 1 (e.g. local:4)")
    return workers


@contextlib.contextmanager
def connect(address: str | None, scratch: Path) -> Iterator[Any]:
    """A :class:`distributed.Client` for ``address`` (closed, with its LocalCluster, at the end).

    ``local:N`` (and no address: ``local:2``) starts a ``LocalCluster`` of N worker processes with
    one thread each, bound to 127.0.0.1, its dashboard on 127.0.0.1 (a free port) and its scratch
    space under ``scratch``. Any other address is a scheduler (``tcp://HOST:8786``).
    """
    from distributed import Client, LocalCluster

    workers = local_workers(address or "local:2")
    if workers is None:
        assert address is not None
        try:
            client = Client(address, timeout="30s")
        except OSError as exc:
            raise ConfigError(
                f"engine.address: cannot reach the Dask scheduler at {address}: {exc}"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    scratch.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,  # one slot per process: a slot's encoding needs a core of its own
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        local_directory=str(scratch),
    )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
