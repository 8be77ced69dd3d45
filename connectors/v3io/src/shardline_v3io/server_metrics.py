"""Prometheus metrics of ``shardline serve --metrics-port PORT`` (prometheus-client, its own registry).

Counted as requests are answered (a wrapper around the server's handler, the low-level
server's equivalent of an aiohttp middleware):

- ``shardline_server_requests_total{function}``: ``function`` is the ``X-v3io-function``
  (``PutRecords``, ``GetRecords``, ...) or, for plain object requests, the HTTP method;
- ``shardline_server_errors_total{function,error}``: answers with an error status, by the
  error name of the body (``ResourceNotFoundException``; ``HTTP 404`` when there is none);
- ``shardline_server_request_duration_seconds{function}``: from the handler's start to its answer.

Read from the store at scrape time (streams opened since the server started):

- ``shardline_server_records_ingested_total{stream}`` and ``shardline_server_bytes_ingested_total{stream}``
  (Data bytes, decoded), ``shardline_server_record_errors_total{stream,error}`` (records a
  PutRecords refused, e.g. injected ``ResourceBusyException`` faults);
- ``shardline_server_stream_shards{stream}``, ``shardline_server_disk_bytes{stream}`` (logs and
  indexes on disk), and ``shardline_server_open_shards`` (shard logs holding open files now).

Served from a thread (``prometheus_client.start_wsgi_server``) so that a scrape never blocks the
event loop; ``/metrics`` only. Loopback unless ``--metrics-host`` says otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_wsgi_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shardline_v3io.store import StreamStore

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})

Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class ServerMetrics:
    """The server's metrics: request counters and latency, and a collector over the store."""

    def __init__(self, store: StreamStore, functions: frozenset[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._functions = functions
        self.requests = Counter(
            "shardline_server_requests",
            "Requests answered, by v3io function (or HTTP method).",
            ["function"],
            registry=self.registry,
        )
        self.errors = Counter(
            "shardline_server_errors",
            "Requests answered with an error status, by function and error name.",
            ["function", "error"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "shardline_server_request_duration_seconds",
            "Time from a request's start to its answer, by function.",
            ["function"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))
        self._server: Any = None

    def observe(self, handle: Handler) -> Handler:
        """``handle`` wrapped: counts every answer, its error name and its latency."""

        async def observed(request: BaseRequest) -> web.StreamResponse:
            started = time.perf_counter()
            response = await handle(request)
            function = request.headers.get("X-v3io-function") or request.method
            if function not in self._functions and function not in _METHODS:
                function = "other"  # a label per unknown header value would be unbounded
            self.duration.labels(function).observe(time.perf_counter() - started)
            self.requests.labels(function).inc()
            if response.status >= 400:
                self.errors.labels(function, _error_name(response)).inc()
            return response

        return observed

    def serve(self, host: str, port: int) -> str:
        """Serve ``/metrics`` on ``host:port`` (0: a free port) from a thread; return its URL."""
        self._server, _thread = start_wsgi_server(port, addr=host, registry=self.registry)
        bound = self._server.server_port
        shown = host if ":" not in host else f"[{host}]"
        return f"http://{shown}:{bound}/metrics"

    def close(self) -> None:
        """Stop serving."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _error_name(response: web.StreamResponse) -> str:
    """The ``ErrorMessage`` of a v3io error body (an error name), else ``HTTP <status>``."""
    body = getattr(response, "body", None)
    if isinstance(body, bytes) and body.startswith(b"{"):
        try:
            name = orjson.loads(body).get("ErrorMessage")
        except (orjson.JSONDecodeError, AttributeError):
            name = None
        if isinstance(name, str) and name and len(name) <= 80:
            return name
    return f"HTTP {response.status}"


class _StoreCollector(Collector):
    """Per-stream counts and sizes, read from the open streams of the store at scrape time."""

    def __init__(self, store: StreamStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily(
            "shardline_server_records_ingested", "Records written to the stream.", labels=["stream"]
        )
        data = CounterMetricFamily(
            "shardline_server_bytes_ingested",
            "Data bytes (decoded) written to the stream.",
            labels=["stream"],
        )
        refused = CounterMetricFamily(
            "shardline_server_record_errors",
            "Records a PutRecords refused, by error name.",
            labels=["stream", "error"],
        )
        shards = GaugeMetricFamily(
            "shardline_server_stream_shards", "Shards of the stream.", labels=["stream"]
        )
        disk = GaugeMetricFamily(
            "shardline_server_disk_bytes",
            "Bytes the stream's logs and indexes take on disk.",
            labels=["stream"],
        )
        for name, stream in self.store.open_streams():
            records.add_metric([name], stream.records_written)
            data.add_metric([name], stream.data_bytes_written)
            for error, n in sorted(dict(stream.records_failed).items()):
                refused.add_metric([name, error], n)
            shards.add_metric([name], stream.shard_count)
            disk.add_metric([name], _disk_bytes(stream.directory))
        yield from (records, data, refused, shards, disk)
        yield GaugeMetricFamily(
            "shardline_server_open_shards",
            "Shard logs holding open files now.",
            value=len(self.store.open_shards),
        )


def _disk_bytes(directory: Path) -> int:
    """Bytes of every file under ``directory`` (files removed meanwhile are skipped)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total
