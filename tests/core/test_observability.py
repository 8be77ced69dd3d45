"""The pieces of observability that need no server: the screen's lag and summary, JSON logs, the
[metrics] table, readiness reasons, labels that stay few, and a port that cannot be bound."""

from __future__ import annotations

import io
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from shardline.config import load_pipeline
from shardline.errors import ConfigError
from shardline.logformat import JsonFormatter
from shardline.metrics import error_name, reason_label
from shardline.pipeline import Runner, RunSummary, run_pipeline
from shardline.progress import lag_text, make_display
from shardline_parquet import write_sample


def _pipeline(tmp_path: Path, extra: str = "") -> Path:
    write_sample(tmp_path / "data", 50, files=1)
    path = tmp_path / "p.toml"
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"
[sink]
stream = "local://{tmp_path / "store"}/bigdata/s"
create = {{ shards = 2 }}
{extra}
"""
    )
    return path


def test_the_progress_line_shows_total_lag_and_the_worst_partition() -> None:
    out = io.StringIO()
    display = make_display(True, "kafka", {}, console=Console(file=out, force_terminal=True, width=160))
    display.update(500, 2048, {"lag": 1_200, "lag_by_partition": {"orders:0": 300, "orders:3": 900}})
    display.close()
    assert "lag 1,200 (worst orders:3 900)" in out.getvalue()
    assert lag_text({"lag": 0, "lag_by_partition": {"orders:0": 0}}) == "lag 0"
    assert lag_text({"total_rows": 10}) == ""  # Parquet: rows of total and ETA instead


def test_the_summary_line_adds_latency_quantiles_and_retries_by_error() -> None:
    summary = RunSummary(
        records=10,
        requests=2,
        retries=5,
        seconds=1.0,
        latency={"p50": 0.004, "p99": 0.031},
        retries_by_error={"TransportError": 1, "ResourceBusyException": 4},
    )
    assert summary.line().endswith(
        "(10 records/s); latency p50 4 ms, p99 31 ms; retries: ResourceBusyException 4, TransportError 1"
    )


def test_error_names_and_dead_letter_reasons_make_few_labels() -> None:
    assert error_name("ProvisionedThroughputExceededException: Rate exceeded for shard 3") == (
        "ProvisionedThroughputExceededException"
    )
    assert error_name("TransportError: put records to x: HTTP 503") == "TransportError"
    assert error_name("  ") == "unknown"
    assert reason_label("retry deadline of 30 s exceeded after 5 attempts") == (
        "retry deadline of N s exceeded after N attempts"
    )
    assert reason_label("Data is 2000000 bytes; the limit is 1048576 bytes") == "Data is N bytes"
    assert reason_label("Data is 7 bytes; the limit is 1048576 bytes") == reason_label("Data is 9 bytes; x")


def test_json_log_lines_carry_the_message_level_and_extra_fields() -> None:
    record = logging.LogRecord(
        "shardline.sink", logging.WARNING, __file__, 1, "a %s failed", ("request",), None
    )
    record.records = 1200
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "WARNING" and entry["logger"] == "shardline.sink"
    assert entry["message"] == "a request failed" and entry["records"] == 1200
    assert entry["ts"].endswith("Z")


def test_run_with_log_format_json_logs_start_and_summary_as_json(tmp_path: Path) -> None:
    import subprocess
    import sys

    shardline = str(Path(sys.executable).with_name("shardline"))
    config = _pipeline(tmp_path)
    proc = subprocess.run(
        [shardline, "run", str(config), "--log-format", "json", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    entries = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    finished = [e for e in entries if e["message"] == "run finished"]
    assert len(finished) == 1 and finished[0]["records"] == 50 and finished[0]["dead_letters"] == 0
    assert proc.stdout.startswith("shardline: 50 records")


def test_the_metrics_table_is_strict_and_off_by_default(tmp_path: Path) -> None:
    assert load_pipeline(_pipeline(tmp_path)).metrics is None
    metrics = load_pipeline(_pipeline(tmp_path, "[metrics]\nport = 9464\n")).metrics
    assert metrics is not None and (metrics.port, metrics.host) == (9464, "127.0.0.1")
    with pytest.raises(ConfigError, match=r"metrics\.prot"):
        load_pipeline(_pipeline(tmp_path, "[metrics]\nprot = 9464\n"))
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        load_pipeline(_pipeline(tmp_path, "[metrics]\nport = 70000\n"))


def test_a_metrics_port_in_use_fails_the_run_at_its_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _pipeline(tmp_path, f"[metrics]\nport = {port}\n")
        with pytest.raises(ConfigError, match=rf"metrics: cannot serve on 127\.0\.0\.1:{port}"):
            run_pipeline(config)


def test_readiness_says_why_not_in_one_line(tmp_path: Path) -> None:
    runner = Runner(load_pipeline(_pipeline(tmp_path)))
    status = runner.status
    assert status.not_ready(60) == "the source is not open yet"

    class Opened:
        def not_ready(self) -> str | None:
            return None

    runner._source = Opened()  # type: ignore[assignment]
    assert "not connected to the stream" in (status.not_ready(60) or "")

    class Sink:
        def __init__(self) -> None:
            from shardline.metrics import SinkMetrics

            self.metrics = SinkMetrics(stream="local://x")

    sink: Any = Sink()
    runner._sink = sink
    assert status.not_ready(60) == "the stream local://x has not answered yet"
    import time

    sink.metrics.last_contact = time.monotonic() - 120
    assert "has not answered for 120 s (limit 60 s)" in (status.not_ready(60) or "")
    sink.metrics.last_contact = time.monotonic()
    assert status.not_ready(60) is None
    status.finished = True
    assert status.not_ready(60) == "the run has ended"


def test_readyz_answers_503_with_the_reason_until_the_run_is_ready(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from shardline.metrics_prometheus import PrometheusExporter

    runner = Runner(load_pipeline(_pipeline(tmp_path)))
    exporter = PrometheusExporter(runner.status, "127.0.0.1", 0, 60.0)
    exporter.start()
    try:
        base = exporter.url.removesuffix("/metrics")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{base}/readyz", timeout=10)
        assert answer.value.code == 503
        assert answer.value.read().decode() == "not ready: the source is not open yet\n"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as healthz:
            assert healthz.status == 200
        with urllib.request.urlopen(exporter.url, timeout=10) as metrics:
            text = metrics.read().decode()
        assert "shardline_sink_records_total 0.0" in text  # before the sink connects: zeros, no error
        assert runner.status.endpoints == {"metrics": exporter.url}
    finally:
        exporter.close()
