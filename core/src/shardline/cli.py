"""The ``shardline`` command. Sub-commands come from plugins through ``shardline_register_commands``."""

from __future__ import annotations

import sys
from typing import Any

import click

from shardline.errors import ShardlineError


class _Group(click.Group):
    """A click group that prints ShardlineErrors as one line, without a traceback, and exits 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShardlineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="shardline")
def cli() -> None:
    """shardline: move Arrow data into PutRecords-compatible streams (v3io, Kinesis)."""


@click.command(name="plugins")
def plugins_command() -> None:
    """List installed plugins and what they register."""
    from shardline import plugins

    infos = plugins.list_plugins()
    errors = plugins.registry_errors()
    owners: dict[str, list[str]] = {}
    for kind in ("sources", "transports", "codecs", "partitioners"):
        for name, (_value, owner) in plugins.registered_with_owner(kind).items():
            owners.setdefault(owner, []).append(f"{kind[:-1]}:{name}")
    for info in infos:
        dist = f" ({info.distribution})" if info.distribution else ""
        if info.error:
            click.echo(f"{info.name}{dist}  BROKEN: {info.error}")
        else:
            provides = ", ".join(owners.get(info.name, [])) or "-"
            click.echo(f"{info.name}{dist}  {provides}")
    for err in errors:
        click.echo(f"error: {err}", err=True)


def _build() -> click.Group:
    from shardline.plugins import get_plugin_manager

    get_plugin_manager().hook.shardline_register_commands(cli=cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``shardline`` console script."""
    _build()(args=argv)
