"""Helpers of the Parquet source tests: a real embedded server, pipeline files, the real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from shardline import plugins
from shardline.cli import _build
from shardline_v3io.testing import read_stream
from shardline_v3io.testing_server import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded v3io-compatible server (a subprocess) per test module; use unique stream names."""
    running = start_server(tmp_path_factory.mktemp("stream-data"))
    try:
        yield running
    finally:
        running.stop()


@dataclass
class CliResult:
    """What a ``shardline`` command did: exit code, stdout and stderr lines."""

    exit_code: int
    out: list[str]
    err: list[str]


def shardline(*args: str) -> CliResult:
    """Run the real ``shardline`` command in-process (click's runner) and collect its output."""
    plugins.reset_plugins()
    result = CliRunner().invoke(_build(), list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback a user would see
    return CliResult(result.exit_code, result.stdout.splitlines(), result.stderr.splitlines())


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers, booleans and lists are the same in TOML


def write_pipeline(
    tmp_path: Path,
    source: dict[str, Any],
    stream: str,
    *,
    mapping: dict[str, Any] | None = None,
    dead_letter: str | None = None,
    name: str = "pipeline.toml",
) -> Path:
    """A pipeline file: ``[source] type = "parquet"`` with ``source``, into ``stream`` (4 shards)."""
    lines = ["[source]", 'type = "parquet"', *(f"{k} = {_toml(v)}" for k, v in source.items())]
    lines += ["", "[sink]", f"stream = {_toml(stream)}", "create = { shards = 4 }"]
    if dead_letter is not None:
        lines.append(f"dead_letter = {_toml(dead_letter)}")
    lines += ["", "[mapping]", *(f"{k} = {_toml(v)}" for k, v in (mapping or {}).items())]
    lines += ["", "[checkpoint]", f"path = {_toml(str(tmp_path / (name + '.ckpt')))}"]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def stream_rows(url: str) -> list[dict[str, Any]]:
    """Every record of a stream as the JSON object it holds, sorted by its JSON text."""
    rows = [json.loads(r.data) for records in read_stream(url).values() for r in records]
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))


def stream_records(url: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Every record of a stream as (PartitionKey, JSON object)."""
    return [(r.partition_key, json.loads(r.data)) for records in read_stream(url).values() for r in records]
