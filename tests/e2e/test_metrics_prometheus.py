"""A real Prometheus server (Debian's ``prometheus`` package) scrapes a backfill every second: it
ends up with the run's final counts, and every metric and expression of the Grafana dashboard works
against it."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shardline.pipeline import run_pipeline
from shardline.plugins import register_plugin, unregister_plugin
from shardline_v3io.testing_server import start_server

from .observability import (
    DASHBOARD,
    Pause,
    dashboard_metrics,
    find_prometheus,
    free_port,
    get,
    poll,
    write_backfill,
)


@pytest.fixture(scope="session")
def prometheus_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = find_prometheus(tmp_path_factory.mktemp("prometheus-package"))
    if binary is None:
        pytest.skip(
            "no Prometheus server: not on PATH, and Debian's `prometheus` package could not be fetched"
        )
    return binary


class Prometheus:
    """A Prometheus server scraping one target every second."""

    def __init__(self, binary: Path, workdir: Path, target: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: shardline\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, promql: str) -> dict[str, Any]:
        status, body = get(f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}")
        answer: dict[str, Any] = json.loads(body)
        assert status == 200 and answer["status"] == "success", (promql, body)
        return answer["data"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def prometheus_at(prometheus_binary: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        server = Prometheus(prometheus_binary, tmp_path / "prometheus", target)
        started.append(server)
        poll(lambda: _answers(f"{server.url}/-/ready"), 60, "Prometheus to be ready")
        return server

    yield start
    for server in started:
        server.stop()


def _answers(url: str) -> bool:
    try:
        return get(url, timeout=2)[0] == 200
    except OSError:
        return False


def test_prometheus_scrapes_the_run_and_every_dashboard_query_works(
    tmp_path: Path, prometheus_at: Any
) -> None:
    final: dict[str, Any] = {}

    def at_end(run: Any, summary: Any) -> None:  # the exporter still serves: wait for a scrape of the end
        prom: Prometheus = final["prometheus"]
        final["records"] = poll(
            lambda: prom.value("shardline_sink_records_total") == summary.records,
            30,
            f"Prometheus to scrape the final {summary.records} records",
        )
        final["summary"] = summary

    pause = Pause(after=3, at_end=at_end)
    name = register_plugin(pause, name="test-prometheus-pause")
    result: dict[str, Any] = {}
    try:
        with start_server(tmp_path / "store", fault_rate=0.03, fault_seed=11) as server:
            config = write_backfill(tmp_path, f"{server.url}/bigdata/prom", 3_000, 200)
            runner = threading.Thread(
                target=lambda: result.setdefault("summary", run_pipeline(config, allow_dead_letters=True)),
                daemon=True,
            )
            runner.start()
            assert pause.held.wait(60), "the run sent no 3 requests"
            try:
                target = pause.run.endpoints["metrics"].removeprefix("http://").removesuffix("/metrics")
                prom = final["prometheus"] = prometheus_at(target)
                poll(lambda: prom.value('up{job="shardline"}') == 1, 30, "Prometheus to scrape the run")
            finally:
                pause.release.set()
            runner.join(120)
            assert not runner.is_alive()
    finally:
        unregister_plugin(name)
    assert pause.end_error is None, pause.end_error
    summary = final["summary"]
    assert summary.records == 3_000 and summary.dead_letters == 1 and summary.retries > 0
    prom = final["prometheus"]
    present = {
        metric
        for metric in dashboard_metrics()
        if prom.query(f'{{__name__=~"{metric}(_total|_bucket|_count|_sum)?"}}')["result"]
    }
    expected = {m for m in dashboard_metrics() if "_kafka_" not in m}  # a Parquet run has no Kafka lag
    assert expected - present == set()
    assert prom.value("sum(shardline_sink_dead_letters_total)") == 1
    assert prom.value("sum(shardline_sink_retries_total)") == summary.retries
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            if not re.search(r"shardline_kafka_", target["expr"]):
                prom.query(target["expr"])  # every expression parses and evaluates
