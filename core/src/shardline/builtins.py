"""Built-in registrations of the core, made through the same hooks as third-party plugins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardline.hookspecs import hookimpl


@hookimpl
def shardline_register_commands(cli: Any) -> None:
    """Add the core's commands (``plugins``, ``validate``, ``run``) to the ``shardline`` command."""
    from shardline.cli import plugins_command, run_command, validate_command

    cli.add_command(plugins_command)
    cli.add_command(validate_command)
    cli.add_command(run_command)


@hookimpl
def shardline_register_partitioners(register: Callable[[str, Any], None]) -> None:
    """Register the built-in partitioners."""
    from shardline import partitioning

    for name, partitioner in partitioning.BUILTIN_PARTITIONERS.items():
        register(name, partitioner)


@hookimpl
def shardline_register_codecs(register: Callable[[str, Any], None]) -> None:
    """Register the built-in Data codecs (``json``, ``raw``, ``arrow``, ``template``)."""
    from shardline import records

    for name, codec in records.BUILTIN_CODECS.items():
        register(name, codec)


@hookimpl
def shardline_on_run_started(run: Any) -> None:
    """Serve the run's Prometheus metrics when its pipeline has ``[metrics] port`` (``--metrics-port``),
    and push them over OTLP when it has ``[metrics] otlp_endpoint``."""
    options = run.config.metrics
    if options is None:
        return
    if options.port is not None:
        from shardline.metrics_prometheus import start_exporter  # prometheus_client only when asked for

        start_exporter(run)
    if options.otlp_endpoint is not None:
        from shardline.metrics_otel import start_otel_exporter

        start_otel_exporter(run)


@hookimpl
def shardline_register_transforms(register: Callable[[str, Any], None]) -> None:
    """Register the built-in ``[[transform]]`` steps (``sql``, ``filter``, ``select``, ``rename``,
    ``cast``, ``set``)."""
    from shardline.transform_steps import builtin_transforms

    for name, cls in builtin_transforms().items():
        register(name, cls)
