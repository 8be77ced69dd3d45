"""A Parquet backfill with ``[metrics] port = 0`` against the real server (with faults): /metrics
mid-way and at the end agrees with the run's summary; /healthz and /readyz answer; the Grafana
dashboard uses only metrics a real scrape has."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from shardline.pipeline import RunSummary, run_pipeline
from shardline.plugins import register_plugin, unregister_plugin
from shardline_parquet import write_sample
from shardline_v3io.testing_server import start_server

from .observability import (
    Pause,
    dashboard_metrics,
    get,
    labelled,
    missing_from,
    scrape,
    total,
    value,
    write_backfill,
)

ROWS = 6_000
BATCH = 200


def test_backfill_metrics_match_the_summary_mid_run_and_at_the_end(tmp_path: Path) -> None:
    final: dict[str, Any] = {}

    def at_end(run: Any, summary: RunSummary) -> None:
        final["families"], final["samples"] = scrape(run.endpoints["metrics"])

    pause = Pause(after=5, at_end=at_end)
    name = register_plugin(pause, name="test-metrics-pause")
    result: dict[str, Any] = {}
    try:
        with start_server(
            tmp_path / "store", fault_rate=0.03, fault_status=503, fault_status_rate=0.05, fault_seed=7
        ) as server:
            config = write_backfill(tmp_path, f"{server.url}/bigdata/metrics", ROWS, BATCH)

            def run() -> None:
                try:
                    result["summary"] = run_pipeline(config, allow_dead_letters=True)
                except BaseException as exc:
                    result["error"] = exc

            runner = threading.Thread(target=run, daemon=True)
            runner.start()
            assert pause.held.wait(60), "the run sent no 5 requests"
            try:
                url = pause.run.endpoints["metrics"]
                assert url.startswith("http://127.0.0.1:")  # loopback by default, a real port for port 0
                base = url.removesuffix("/metrics")
                assert get(f"{base}/healthz") == (200, "ok\n")
                assert get(f"{base}/readyz") == (200, "ready\n")
                _families, mid = scrape(url)
                metrics = pause.run.sink_metrics
                assert 0 < value(mid, "shardline_sink_requests_total") == metrics.requests
                assert value(mid, "shardline_sink_records_total") == metrics.records < ROWS
                assert value(mid, "shardline_parquet_rows_total") == ROWS + 1
                assert value(mid, "shardline_parquet_rows_done") < ROWS + 1
                assert value(mid, "shardline_sink_shards") == 3
                assert value(mid, "shardline_sink_request_duration_seconds_count") == 5  # the 5th is held
            finally:
                pause.release.set()
            runner.join(120)
            assert not runner.is_alive()
    finally:
        unregister_plugin(name)
    assert "error" not in result, result.get("error")
    assert pause.end_error is None, pause.end_error
    summary: RunSummary = result["summary"]
    end = final["samples"]
    assert summary.records == ROWS and summary.dead_letters == 1
    assert value(end, "shardline_sink_records_total") == summary.records
    assert value(end, "shardline_sink_bytes_total") == summary.bytes
    assert value(end, "shardline_sink_requests_total") == summary.requests
    assert value(end, "shardline_source_rows_total") == summary.rows_read == ROWS + 1
    assert value(end, "shardline_source_batches_acked_total") == summary.batches_acked
    assert value(end, "shardline_parquet_rows_done") == ROWS + 1
    assert summary.retries > 0 and total(end, "shardline_sink_retries_total") == summary.retries
    assert labelled(end, "shardline_sink_retries_total", "error") == summary.retries_by_error
    assert labelled(end, "shardline_sink_dead_letters_total", "reason") == {"Data is N bytes": 1}
    assert value(end, "shardline_sink_throttled_requests_total") == summary.metrics["throttled_requests"] > 0
    assert value(end, "shardline_sink_request_duration_seconds_count") == summary.requests
    assert value(end, "shardline_sink_records_per_request_sum") >= summary.records
    assert value(end, "shardline_sink_in_flight_records") == 0
    assert value(end, "shardline_source_checkpoint_age_seconds") < 60
    assert set(labelled(end, "shardline_sink_shard_allowance", "shard")) == {"0", "1", "2"}
    assert set(summary.latency) == {"p50", "p99"} and 0 < summary.latency["p50"] <= summary.latency["p99"]
    assert "p99" in summary.line() and "retries: " in summary.line()
    assert summary.endpoints == {"metrics": pause.run.endpoints["metrics"]}
    missing = missing_from(final["families"], {m for m in dashboard_metrics() if "_kafka_" not in m})
    assert not missing, f"the dashboard uses metrics a scrape does not have: {sorted(missing)}"


def test_the_metrics_port_is_closed_after_the_run(tmp_path: Path, stream_server_session: Any) -> None:
    write_sample(tmp_path / "data", 100, files=1)
    config = tmp_path / "p.toml"
    config.write_text(
        f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"
[sink]
stream = "{stream_server_session.url}/bigdata/closed"
create = {{ shards = 1 }}
[metrics]
port = 0
"""
    )
    summary = run_pipeline(config)
    url = summary.endpoints["metrics"]
    with pytest.raises(OSError):
        get(url, timeout=2)


def test_without_a_metrics_table_nothing_is_served(tmp_path: Path, stream_server_session: Any) -> None:
    write_sample(tmp_path / "data", 100, files=1)
    config = tmp_path / "p.toml"
    config.write_text(
        f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"
[sink]
stream = "{stream_server_session.url}/bigdata/off"
create = {{ shards = 1 }}
"""
    )
    summary = run_pipeline(config)
    assert summary.records == 100 and summary.endpoints == {}
    assert summary.latency  # the summary's latency comes from the hooks, not from the exporter
