"""A Kafka bridge run by ``shardline run --metrics-port 0`` against a real broker and the real server:
consumer lag shows mid-run and falls to 0, committed offsets reach the end, counters equal the summary."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from shardline.cli import main
from shardline.plugins import register_plugin, unregister_plugin
from shardline_v3io.testing_server import start_server

from ..e2e.observability import Pause, dashboard_metrics, get, labelled, missing_from, scrape, value
from .bridge import pipeline_file, produce_keyed_topic

pytestmark = [pytest.mark.kafka]

COUNT = 3_000
_groups = itertools.count()


def test_bridge_metrics_show_lag_falling_to_zero_and_match_the_summary(
    bootstrap: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    topic = produce_keyed_topic(bootstrap, f"metrics-{id(tmp_path) % 100000}", COUNT, keys=50, partitions=2)
    final: dict[str, Any] = {}

    def at_end(run: Any, summary: Any) -> None:
        final["summary"] = summary
        final["families"], final["samples"] = scrape(run.endpoints["metrics"])

    pause = Pause(after=1, at_end=at_end)
    name = register_plugin(pause, name="test-kafka-metrics-pause")
    exit_code: list[object] = []
    try:
        with start_server(tmp_path / "store") as server:
            config = pipeline_file(
                tmp_path / "bridge.toml",
                bootstrap=bootstrap,
                topic=topic.name,
                group=f"metrics-{next(_groups)}-{id(tmp_path)}",
                stream_url=f"{server.url}/bigdata/bridge",
            )

            def run() -> None:
                try:
                    main(["run", str(config), "--metrics-port", "0", "--no-progress"])
                except SystemExit as exc:
                    exit_code.append(exc.code)

            runner = threading.Thread(target=run, daemon=True)
            runner.start()
            assert pause.held.wait(90), "the bridge sent no request"
            try:
                url = pause.run.endpoints["metrics"]
                assert get(url.replace("/metrics", "/readyz")) == (200, "ready\n")
                _families, mid = scrape(url)
                lag = labelled(mid, "shardline_kafka_consumer_lag", "partition")
                assert set(lag) <= {"0", "1"} and sum(lag.values()) > 0
                assert value(mid, "shardline_sink_records_total") < COUNT
            finally:
                pause.release.set()
            runner.join(120)
            assert not runner.is_alive()
    finally:
        unregister_plugin(name)
    assert exit_code == [0]
    assert pause.end_error is None, pause.end_error
    err = capfd.readouterr().err
    assert f"metrics at {pause.run.endpoints['metrics']}" in err  # the start line names the bound port
    summary, end = final["summary"], final["samples"]
    assert summary.records == COUNT
    assert value(end, "shardline_sink_records_total") == summary.records
    assert value(end, "shardline_sink_requests_total") == summary.requests
    assert value(end, "shardline_source_rows_total") == summary.rows_read == COUNT
    assert value(end, "shardline_sink_request_duration_seconds_count") == summary.requests > 0
    lag = labelled(end, "shardline_kafka_consumer_lag", "partition")
    assert set(lag) == {"0", "1"} and sum(lag.values()) == 0
    ends = labelled(end, "shardline_kafka_end_offset", "partition")
    assert labelled(end, "shardline_kafka_committed_offset", "partition") == ends
    assert sum(ends.values()) == COUNT
    # Parquet's gauges and the checkpoint's age (a Kafka pipeline has no [checkpoint]) are the Parquet test's
    kafka_run = {m for m in dashboard_metrics() if "_parquet_" not in m and "checkpoint" not in m}
    missing = missing_from(final["families"], kafka_run)
    assert not missing, f"the dashboard uses metrics a scrape does not have: {sorted(missing)}"
