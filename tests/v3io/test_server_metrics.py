"""``shardline serve --metrics-port 0``: records and bytes ingested per stream, requests and errors by
function and error name, latency, bytes on disk and open shards, agreeing with what a sink sent."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import shardline
from prometheus_client.parser import text_string_to_metric_families
from shardline_v3io.testing_server import start_server

ROWS = 2_000


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _describe_missing(base: str) -> int:
    request = urllib.request.Request(
        f"{base}/bigdata/no-such-stream/", method="PUT", headers={"X-v3io-function": "DescribeStream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_server_metrics_count_what_the_sink_sent(tmp_path: Path) -> None:
    with start_server(tmp_path / "store", metrics_port=0, fault_rate=0.1, fault_seed=5) as server:
        url = server.metrics_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        batch = pa.record_batch({"k": [f"key-{i % 37}" for i in range(ROWS)], "v": list(range(ROWS))})
        with shardline.StreamSink(
            f"{server.url}/bigdata/metered", partition_key="k", create={"shards": 2}
        ) as sink:
            sink.write(batch)
            sink.flush(timeout=60)
            sent = sink.metrics.snapshot()
        assert _describe_missing(server.url) == 404
        m = _scrape(url)
    stream = (("stream", "bigdata/metered"),)
    assert sent["records"] == ROWS and sent["retries"] > 0  # the faults made the sink retry
    assert m[("shardline_server_records_ingested_total", stream)] == ROWS
    assert m[("shardline_server_bytes_ingested_total", stream)] == sent["bytes"]
    busy = (("error", "ResourceBusyException"), ("stream", "bigdata/metered"))
    assert m[("shardline_server_record_errors_total", busy)] == sent["retries"]
    puts = (("function", "PutRecords"),)
    assert m[("shardline_server_requests_total", puts)] == sent["requests"]
    assert m[("shardline_server_request_duration_seconds_count", puts)] == sent["requests"]
    missing = (("error", "ResourceNotFoundException"), ("function", "DescribeStream"))
    assert m[("shardline_server_errors_total", missing)] == 2  # ours, and the sink's first describe
    assert m[("shardline_server_stream_shards", stream)] == 2
    assert m[("shardline_server_disk_bytes", stream)] > sent["bytes"]
    assert m[("shardline_server_open_shards", ())] >= 2
