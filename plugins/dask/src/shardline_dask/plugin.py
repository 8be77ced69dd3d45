"""The shardline-dask plugin: registers the ``dask`` runner (``[engine] type = "dask"``, ``--dask``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardline import hookimpl


@hookimpl
def shardline_register_runners(register: Callable[[str, Any], None]) -> None:
    """Register the ``dask`` runner (imports dask only when a run uses it)."""

    def run_on_dask(config: Any, **kwargs: Any) -> Any:
        from shardline_dask.runner import run_on_dask as run

        return run(config, **kwargs)

    register("dask", run_on_dask)
