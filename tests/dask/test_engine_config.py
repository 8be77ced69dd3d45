"""``[engine]`` and ``--dask``: what the core says without the plugin, and how addresses are read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from shardline import ConfigError, PluginError, plugins
from shardline.cli import _build
from shardline.pipeline import run_pipeline
from shardline_dask.cluster import local_workers
from shardline_parquet import write_sample


@pytest.fixture
def without_dask() -> Iterator[None]:
    plugins.reset_plugins()
    plugins.unregister_plugin("dask")
    plugins.get_plugin_manager()
    try:
        yield
    finally:
        plugins.reset_plugins()


def pipeline(tmp_path: Path, engine: str) -> Path:
    write_sample(tmp_path / "data", 100, files=1)
    path = tmp_path / "p.toml"
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"
[sink]
stream = "local://{tmp_path / "store"}/bigdata/x"
create = {{ shards = 2 }}
[engine]
{engine}
"""
    )
    return path


def test_without_the_plugin_a_dask_engine_says_what_to_install(tmp_path: Path, without_dask: None) -> None:
    assert "dask" not in plugins.registered("runners")
    with pytest.raises(PluginError, match="pip install shardline-dask"):
        run_pipeline(pipeline(tmp_path, 'type = "dask"'))


def test_the_cli_turns_dask_into_the_engine_and_prints_one_line_without_the_plugin(
    tmp_path: Path, without_dask: None
) -> None:
    result = CliRunner().invoke(_build(), ["run", str(pipeline(tmp_path, "")), "--dask", "local:2"])
    assert result.exit_code == 1
    assert "pip install shardline-dask" in result.output and "Traceback" not in result.output


def test_engine_keys_are_checked_like_every_other_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"engine.split: .*'shards' or 'files'"):
        run_pipeline(pipeline(tmp_path, 'type = "dask"\nsplit = "rows"'))


@pytest.mark.parametrize(
    ("address", "workers"), [("local:3", 3), ("tcp://10.0.0.1:8786", None), ("localhost:8786", None)]
)
def test_local_n_is_a_local_cluster_and_anything_else_a_scheduler(address: str, workers: int | None) -> None:
    assert local_workers(address) == workers


@pytest.mark.parametrize("address", ["local:0", "local:x", "local:"])
def test_a_malformed_local_address_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="local:N with N >= 1"):
        local_workers(address)


def test_a_local_store_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local:// store belongs to one process"):
        run_pipeline(pipeline(tmp_path, 'type = "dask"\naddress = "local:2"'))
