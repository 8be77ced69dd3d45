"""shardline_dask: run a shardline backfill on a Dask cluster (``shardline run --dask ADDRESS|local:N``)."""

from __future__ import annotations

from shardline_dask.layout import Layout, slot_checkpoint, state_dir
from shardline_dask.runner import run_on_dask

__all__ = ["Layout", "run_on_dask", "slot_checkpoint", "state_dir"]
