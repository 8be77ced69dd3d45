"""The ``shardline`` command. Sub-commands come from plugins through ``shardline_register_commands``."""

from __future__ import annotations

import sys
from typing import Any

import click

from shardline.errors import ShardlineError


class ShardlineGroup(click.Group):
    """A click group that prints ShardlineErrors as one line, without a traceback, and exits 1.

    Public for plugins that ship a command of their own (``python -m shardline_v3io``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShardlineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


_Group = ShardlineGroup  # the old private name


class PipelineFileError(ShardlineError):
    """A ShardlineError raised while validating or running a pipeline file, with the file's name in front."""


def in_pipeline(pipeline: str, exc: ShardlineError) -> PipelineFileError:
    """``exc`` as one line that starts with ``PIPELINE: `` (unless it already names the file).

    ``shardline run``/``validate`` print it as ``error: PIPELINE.toml: <message>``.
    """
    message = " ".join(str(exc).split("\n")).strip()
    if not message.startswith((f"{pipeline}:", "--set ")):
        message = f"{pipeline}: {message}"
    return PipelineFileError(message)


@click.group(cls=ShardlineGroup)
@click.version_option(package_name="shardline")
def cli() -> None:
    """shardline: move Arrow data into PutRecords-compatible streams (v3io, Kinesis)."""


@click.command(name="plugins")
def plugins_command() -> None:
    """List installed plugins and what they register; broken ones are listed with the reason.

    Exits 1 when any plugin is broken or had a registration refused (e.g. a name clash with a
    built-in), so a deployment check can rely on it.
    """
    from shardline import plugins

    infos = plugins.list_plugins()
    errors = plugins.registry_errors()
    owners: dict[str, list[str]] = {}
    for kind in plugins.KINDS:
        for name, (_value, owner) in plugins.registered_with_owner(kind).items():
            owners.setdefault(owner, []).append(f"{kind[:-1]}:{name}")
    for info in infos:
        dist = f" ({info.distribution})" if info.distribution else ""
        provides = ", ".join(owners.get(info.name, [])) or "-"
        if info.error:
            click.echo(f"{info.name}{dist}  BROKEN: {info.error}")
            continue
        if info.broken:
            click.echo(f"{info.name}{dist}  BROKEN: {info.broken[0]}")
            for reason in info.broken[1:]:
                click.echo(f"    broken: {reason}")
            if owners.get(info.name):
                click.echo(f"    provides: {provides}")
        else:
            click.echo(f"{info.name}{dist}  {provides}")
        for problem in info.problems:
            click.echo(f"    refused: {problem}")
    for err in errors:
        click.echo(f"error: {err}", err=True)
    if errors:
        sys.exit(1)


@click.command(name="validate")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config value.")
def validate_command(pipeline: str, overrides: tuple[str, ...]) -> None:
    """Check a pipeline file (TOML, YAML or JSON) without running it; print what it would do."""
    from shardline.config import load_pipeline
    from shardline.redact import redact_url

    try:
        config = load_pipeline(pipeline, overrides)
        source_summary = config.source_cls.preflight(config.source_options)  # what run checks first
    except ShardlineError as exc:
        raise in_pipeline(pipeline, exc) from None
    checkpoint = config.checkpoint.path if config.checkpoint else "none"
    click.echo(
        f"{pipeline}: ok: {config.source_type} source -> {redact_url(config.sink.stream)} "
        f"(data={config.mapping.data}, partitioner={config.mapping.partitioner}, checkpoint={checkpoint})"
    )
    if source_summary:
        click.echo(f"  source: {source_summary}")
    click.echo(f"{pipeline}: {config.describe_mapping()}")


@click.command(name="run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config value.")
@click.option("--allow-dead-letters", is_flag=True, help="Exit 0 even when some records were dead-lettered.")
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar (default: when stdout is a terminal)."
)
def run_command(
    pipeline: str, overrides: tuple[str, ...], allow_dead_letters: bool, progress: bool | None
) -> None:
    """Run a pipeline file: source -> sink, with checkpoints; Ctrl-C stops cleanly and resumable."""
    from shardline.config import load_pipeline
    from shardline.pipeline import run_pipeline
    from shardline.redact import redact_url

    try:
        config = load_pipeline(pipeline, overrides)
        start_line = (
            f"shardline: {pipeline}: {config.source_type} source -> {redact_url(config.sink.stream)}; "
            f"{config.describe_mapping()}"
        )
        summary = run_pipeline(
            config,
            allow_dead_letters=allow_dead_letters,
            progress=progress,
            handle_signals=True,
            on_start=lambda: click.echo(start_line, err=True),
        )
    except ShardlineError as exc:  # config, source, sink start, checkpoint, delivery: name the file
        raise in_pipeline(pipeline, exc) from None
    click.echo(summary.line())
    for problem in summary.problems():
        click.echo(f"error: {problem}", err=True)
    sys.exit(summary.exit_code)


def _build() -> click.Group:
    from shardline.plugins import register_commands

    for error in register_commands(cli):  # a plugin whose commands fail to load does not break the rest
        click.echo(f"warning: {error}", err=True)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``shardline`` console script."""
    _build()(args=argv)
