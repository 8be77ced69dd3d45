"""``python -m shardline_v3io serve|stream|demo ...``: this plugin's commands, without loading other plugins.

Tests start the server this way so that a broken third-party plugin cannot stop it from starting.
"""

from __future__ import annotations

import click
from shardline import ShardlineGroup

from shardline_v3io.plugin import shardline_register_commands


@click.group(cls=ShardlineGroup)
def main() -> None:
    """shardline-v3io: the embedded stream server and stream commands."""


shardline_register_commands(main)

if __name__ == "__main__":
    main()
