"""The ``serve`` command."""

from __future__ import annotations

import os
from collections.abc import Mapping

import click
from shardline import ConfigError

from shardline_v3io.guard import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_PENDING_PER_CLIENT,
)


def access_key_from(option: str | None, environ: Mapping[str, str]) -> str | None:
    """The key to require: ``--access-key``, else env ``SHARDLINE_ACCESS_KEY``, else None (open).

    Raise ConfigError when the key given is empty or blank (``--access-key "$UNSET"``): a server
    that looks protected but is open is worse than either.
    """
    source = "--access-key"
    if option is None:
        option, source = environ.get("SHARDLINE_ACCESS_KEY"), "SHARDLINE_ACCESS_KEY"
    if option is not None and not option.strip():
        raise ConfigError(
            f"{source} is empty: give a non-empty key, or leave it out entirely to serve without auth"
        )
    return option


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
    "Default: env SHARDLINE_ACCESS_KEY; neither given = open. An empty key is refused.",
)
@click.option(
    "--header-timeout",
    default=DEFAULT_HEADER_TIMEOUT_S,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a connection has to send a request's headers (also how long an idle one stays open).",
)
@click.option(
    "--body-timeout",
    default=DEFAULT_BODY_TIMEOUT_S,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a stream request's body has to arrive (and the longest pause in an object upload).",
)
@click.option(
    "--max-pending-per-client",
    default=DEFAULT_MAX_PENDING_PER_CLIENT,
    show_default=True,
    type=click.IntRange(min=1),
    help="Connections one client address may have sending a request at once; "
    "a new one closes the oldest (the one stalled longest).",
)
@click.option(
    "--fault-rate",
    default=0.0,
    show_default=True,
    type=float,
    metavar="F",
    help="Fail this expected fraction (0..1) of the records of each PutRecords with the retryable "
    "per-record error ResourceBusyException, in either shape.",
)
@click.option(
    "--fault-shape",
    default="random",
    show_default=True,
    type=click.Choice(["random", "tail"]),
    help="random: each record fails independently; tail: per shard, m ~ Binomial(n, F) of its n "
    "records in the request fail, the last m (how an append log stops).",
)
@click.option(
    "--fault-status",
    default=503,
    show_default=True,
    type=int,
    metavar="STATUS",
    help="HTTP status (400..599) of whole-request faults.",
)
@click.option(
    "--fault-status-rate",
    default=0.0,
    show_default=True,
    type=float,
    metavar="F",
    help="Answer this fraction of PutRecords/GetRecords/Seek/DescribeStream requests with "
    "--fault-status, before anything is written.",
)
@click.option(
    "--fault-reset-rate",
    default=0.0,
    show_default=True,
    type=float,
    metavar="F",
    help="For this fraction of PutRecords, write the records, then reset the connection with no "
    "answer (the client cannot know the outcome: a retry makes duplicates).",
)
@click.option(
    "--fault-latency",
    default=0.0,
    show_default=True,
    type=float,
    metavar="MS",
    help="Delay PutRecords answers by a random 0..MS milliseconds (records are written first; "
    "other requests are not held up).",
)
@click.option(
    "--fault-latency-rate",
    default=None,
    type=float,
    metavar="F",
    help="Fraction of PutRecords answers that --fault-latency delays.  [default: 1.0 with --fault-latency]",
)
@click.option("--fault-seed", default=None, type=int, help="Seed of the fault injection (reproducible runs).")
@click.option(
    "--fsync", is_flag=True, help="fsync every write (survives power loss, not only process death)."
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus /metrics on this port (0: any free port; the address is printed).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics port binds."
)
def serve_command(
    data_dir: str,
    host: str,
    port: int,
    access_key: str | None,
    header_timeout: float,
    body_timeout: float,
    max_pending_per_client: int,
    fault_rate: float,
    fault_shape: str,
    fault_status: int,
    fault_status_rate: float,
    fault_reset_rate: float,
    fault_latency: float,
    fault_latency_rate: float | None,
    fault_seed: int | None,
    fsync: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the embedded v3io-compatible stream server until SIGTERM/SIGINT.

    Prints one line `listening on http://HOST:PORT` when ready. The --fault-* options inject
    failures for your own tests (see the connector README); a bad value exits 1 with one line.
    """
    from shardline_v3io.faults import FaultConfig
    from shardline_v3io.guard import GuardOptions
    from shardline_v3io.server import ServerOptions, run

    key = access_key_from(access_key, os.environ)
    guard = GuardOptions(
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_pending_per_client=max_pending_per_client,
    )
    fault = FaultConfig(  # raises ConfigError (one line, exit 1) on a bad value
        rate=fault_rate,
        shape=fault_shape,
        status=fault_status,
        status_rate=fault_status_rate,
        reset_rate=fault_reset_rate,
        latency_ms=fault_latency,
        latency_rate=fault_latency_rate,
        seed=fault_seed,
    )
    try:
        run(
            ServerOptions(
                data_dir=data_dir,
                host=host,
                port=port,
                access_key=key,
                fault=fault,
                fsync=fsync,
                guard=guard,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
            )
        )
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port} with data dir {data_dir}: {exc}") from exc
