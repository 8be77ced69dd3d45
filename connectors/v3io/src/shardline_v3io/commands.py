"""The ``serve`` command."""

from __future__ import annotations

import os

import click
from shardline.errors import ConfigError


@click.command(name="serve")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="Where streams are stored.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind (127.0.0.1 = this machine only).",
)
@click.option(
    "--port", default=8081, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@click.option(
    "--access-key",
    default=None,
    help="Require this key (X-v3io-session-key or Basic password). "
    "Default: env SHARDLINE_ACCESS_KEY; none = open.",
)
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fail this fraction of records of each PutRecords with a retryable per-record error.",
)
@click.option(
    "--fault-shape",
    default="random",
    show_default=True,
    type=click.Choice(["random", "tail"]),
    help="random: independent records fail; tail: per shard, the records from a random point on fail.",
)
@click.option(
    "--fault-status",
    default=503,
    show_default=True,
    type=click.IntRange(400, 599),
    help="HTTP status of whole-request faults.",
)
@click.option(
    "--fault-status-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Answer this fraction of stream requests with --fault-status.",
)
@click.option("--fault-seed", default=None, type=int, help="Seed of the fault injection (reproducible runs).")
@click.option(
    "--fsync", is_flag=True, help="fsync every write (survives power loss, not only process death)."
)
def serve_command(
    data_dir: str,
    host: str,
    port: int,
    access_key: str | None,
    fault_rate: float,
    fault_shape: str,
    fault_status: int,
    fault_status_rate: float,
    fault_seed: int | None,
    fsync: bool,
) -> None:
    """Run the embedded v3io-compatible stream server until SIGTERM/SIGINT.

    Prints one line `listening on http://HOST:PORT` when ready.
    """
    from shardline_v3io.faults import FaultConfig
    from shardline_v3io.server import ServerOptions, run

    key = access_key or os.environ.get("SHARDLINE_ACCESS_KEY") or None
    try:
        fault = FaultConfig(
            rate=fault_rate,
            shape=fault_shape,
            status=fault_status,
            status_rate=fault_status_rate,
            seed=fault_seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        run(ServerOptions(data_dir=data_dir, host=host, port=port, access_key=key, fault=fault, fsync=fsync))
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port} with data dir {data_dir}: {exc}") from exc
