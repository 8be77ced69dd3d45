"""``[metrics] otlp_endpoint``: a backfill pushes its metrics over OTLP/HTTP to a receiver (a real HTTP
server decoding OpenTelemetry's protobuf), and the last push equals the run's summary."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shardline.pipeline import run_pipeline
from shardline_parquet import write_sample

metrics_service = pytest.importorskip(
    "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", reason="needs shardline[otel]"
)


class Receiver(http.server.ThreadingHTTPServer):
    """Collects the OTLP/HTTP metric exports POSTed to ``/v1/metrics``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.exports: list[Any] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/metrics"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = metrics_service.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        self.server.exports.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _last_points(exports: list[Any]) -> dict[str, Any]:
    """The last data point pushed of each metric (by name)."""
    points: dict[str, Any] = {}
    for export in exports:
        for resource in export.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind).data_points
                    if data:
                        points[metric.name] = data[-1]
    return points


def test_a_run_pushes_its_metrics_over_otlp(
    tmp_path: Path, stream_server_session: Any, receiver: Receiver
) -> None:
    write_sample(tmp_path / "data", 2_000, files=2, row_group_size=500)
    config = tmp_path / "otel.toml"
    config.write_text(
        f"""
[source]
type = "parquet"
path = "{tmp_path / "data"}/*.parquet"
batch_size = 250
[sink]
stream = "{stream_server_session.url}/bigdata/otel"
create = {{ shards = 2 }}
[mapping]
partition_key = "user_id"
[metrics]
otlp_endpoint = "{receiver.url}"
otlp_interval_s = 0.2
"""
    )
    summary = run_pipeline(config)
    assert summary.records == 2_000 and summary.endpoints == {"otlp": receiver.url}
    points = _last_points(receiver.exports)
    assert points["shardline.sink.records"].as_int == summary.records
    assert points["shardline.sink.bytes"].as_int == summary.bytes
    assert points["shardline.sink.requests"].as_int == summary.requests
    assert points["shardline.sink.request.duration"].count == summary.requests
    assert points["shardline.source.rows"].as_int == 2_000
    assert points["shardline.parquet.rows_done"].as_int == 2_000
    resource = receiver.exports[-1].resource_metrics[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "shardline"
