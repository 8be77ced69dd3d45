"""The Prometheus exporter of ``shardline run``: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

A built-in plugin written the way a third party would write one: it uses only the observer hooks
(``shardline_on_run_started``/``_finished``, ``shardline_on_request``, ``shardline_on_retry``,
``shardline_on_dead_letter``) and the live :class:`~shardline.RunStatus` (the sink's
:class:`~shardline.SinkMetrics`, the source's :meth:`~shardline.Source.gauges`). It is off unless
the pipeline has ``[metrics] port`` (``shardline run --metrics-port PORT``).

What comes from where:

- read at scrape time (a custom collector, nothing polls): the sink's counters and gauges
  (records, bytes, requests, throttled requests, order breaks, in flight, shard allowance, shards),
  the run's rows read and batches acknowledged, the checkpoint's age, and the source's gauges
  (Kafka lag and committed offsets, Parquet rows done and total) as ``shardline_<name>``;
- counted from the hooks as they happen: retries by error name, dead letters by reason, and the
  request latency and records-per-request histograms.

Each run gets its own :class:`prometheus_client.CollectorRegistry` (no process-wide registry) and
its own exporter object, registered with the plugin manager for the length of the run.

``/healthz`` answers 200 while the process runs; ``/readyz`` 200 when the source is connected and
the stream answered within ``[metrics] ready_within_s`` seconds, else 503 with the reason in one line.
Prometheus conventions: https://prometheus.io/docs/practices/naming/
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from shardline.errors import ConfigError
from shardline.hookspecs import hookimpl
from shardline.metrics import error_name, reason_label
from shardline.runstatus import RunStatus

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Buckets of ``shardline_sink_request_duration_seconds`` (seconds; +Inf is added)."""
RECORDS_BUCKETS = (1, 8, 32, 100, 250, 500, 1000)
"""Buckets of ``shardline_sink_records_per_request`` (the v3io limit is 1,000, Kinesis's 500)."""

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def start_exporter(run: RunStatus) -> PrometheusExporter | None:
    """Start an exporter for ``run`` when its pipeline asks for one (``[metrics] port``); the
    built-in ``shardline_on_run_started`` (``shardline.builtins``) calls this.

    Raises :class:`~shardline.ConfigError` when the port cannot be bound.
    """
    options = run.config.metrics
    if options is None or options.port is None:
        return None
    from shardline.plugins import register_plugin

    exporter = PrometheusExporter(run, options.host, options.port, options.ready_within_s)
    try:
        exporter.start()
    except OSError as exc:
        raise ConfigError(
            f"metrics: cannot serve on {options.host}:{options.port}: {exc.strerror or exc}; "
            "choose another [metrics] port (or --metrics-port; 0 picks a free one)"
        ) from None
    exporter.plugin_name = register_plugin(exporter, name=f"shardline-prometheus-{id(run)}")
    return exporter


class PrometheusExporter:
    """Serves one run's metrics. Its hook methods count what the sink reports for the run's stream."""

    def __init__(self, run: RunStatus, host: str, port: int, ready_within_s: float) -> None:
        self.run = run
        self.host = host
        self.port = port
        self.ready_within_s = ready_within_s
        self.plugin_name: str | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.retries = Counter(
            "shardline_sink_retries",
            "Records sent again after a failed attempt, by the name of the error.",
            ["error"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "shardline_sink_dead_letters",
            "Records given up and written to the dead-letter target, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "shardline_sink_request_duration_seconds",
            "Time from sending a PutRecords request to its answer.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.records_per_request = Histogram(
            "shardline_sink_records_per_request",
            "Records carried by each PutRecords request.",
            buckets=RECORDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_RunCollector(run))
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- serving ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics`` of the bound server."""
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> None:
        """Bind (port 0: a free port) and serve from a daemon thread; announce the address to the run."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                return _text(start_response, "200 OK", "ok")
            if path == "/readyz":
                reason = self.run.not_ready(self.ready_within_s)
                if reason is None:
                    return _text(start_response, "200 OK", "ready")
                return _text(start_response, "503 Service Unavailable", f"not ready: {reason}")
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result

        self._server = make_server(
            self.host, self.port, app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="shardline-metrics",
            daemon=True,
        )
        self._thread.start()
        self.run.announce("metrics", self.url)

    def close(self) -> None:
        """Stop serving (returns within the server's poll interval)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- hooks -----------------------------------------------------------------------------------

    @hookimpl
    def shardline_on_request(self, stream: str, records: int, seconds: float) -> None:
        """Observe a request's latency and size."""
        if stream == self.run.stream:
            self.duration.observe(seconds)
            self.records_per_request.observe(records)

    @hookimpl
    def shardline_on_retry(self, stream: str, records: int, error: str) -> None:
        """Count retried records by error name."""
        if stream == self.run.stream:
            self.retries.labels(error=error_name(error)).inc(records)

    @hookimpl
    def shardline_on_dead_letter(self, stream: str, reason: str) -> None:
        """Count a dead letter by reason (numbers and details left out, so labels stay few)."""
        if stream == self.run.stream:
            self.dead_letters.labels(reason=reason_label(reason)).inc()

    @hookimpl(trylast=True)  # observers that read the final numbers from /metrics go first
    def shardline_on_run_finished(self, run: RunStatus) -> None:
        """Stop serving and leave the plugin manager when this exporter's run ends."""
        if run is not self.run:
            return
        self.close()
        if self.plugin_name is not None:
            from shardline.plugins import unregister_plugin

            unregister_plugin(self.plugin_name)


class _RunCollector(Collector):
    """What a scrape reads from the run itself: the sink's counters and gauges, the source's progress."""

    def __init__(self, run: RunStatus) -> None:
        self.run = run

    def collect(self) -> Iterator[Metric]:
        run = self.run
        m = run.sink_metrics
        counters = (
            ("shardline_sink_records", "Records written to the stream.", m.records if m else 0),
            ("shardline_sink_bytes", "Data bytes written (before base64).", m.bytes if m else 0),
            ("shardline_sink_requests", "PutRecords requests sent.", m.requests if m else 0),
            (
                "shardline_sink_failed_requests",
                "Requests that failed as a whole (and were retried).",
                m.failed_requests if m else 0,
            ),
            (
                "shardline_sink_throttled_requests",
                "Requests the stream throttled, as a whole or some of their records.",
                m.throttled_requests if m else 0,
            ),
            (
                "shardline_sink_order_breaks",
                "Keys whose order the stream broke (only ordering modes other than strict can).",
                m.order_violations if m else 0,
            ),
            (
                "shardline_sink_shard_growths",
                "Times the stream grew and the sink followed.",
                m.shard_growths if m else 0,
            ),
            ("shardline_source_rows", "Rows the source yielded in this run.", run.rows_read),
            ("shardline_source_batches", "Batches the source yielded in this run.", run.batches_read),
            (
                "shardline_source_rows_acked",
                "Rows of this run written and acknowledged to the source.",
                run.rows_acked,
            ),
            (
                "shardline_source_batches_acked",
                "Batches of this run written and acknowledged to the source.",
                run.batches_acked,
            ),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)
        in_flight = sum(m.shard_in_flight.values()) if m else 0
        gauges = (
            ("shardline_sink_in_flight_records", "Records in requests not yet answered.", in_flight),
            (
                "shardline_sink_in_flight_bytes",
                "Encoded records not yet acknowledged plus request bodies in flight (bytes).",
                (m.buffered_bytes + m.request_bytes) if m else 0,
            ),
            (
                "shardline_sink_in_flight_requests",
                "Requests sent and not yet answered.",
                m.in_flight_requests if m else 0,
            ),
            ("shardline_sink_shards", "Shards of the stream the sink writes to.", m.shard_count if m else 0),
        )
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        allowance = GaugeMetricFamily(
            "shardline_sink_shard_allowance",
            "Records per request the sink allows a shard now (AIMD: halved when throttled, grows back).",
            labels=["shard"],
        )
        for shard, value in sorted((m.shard_allowance if m else {}).items()):
            allowance.add_metric([str(shard)], value)
        yield allowance
        if m is not None and m.last_contact is not None:
            yield GaugeMetricFamily(
                "shardline_sink_last_answer_age_seconds",
                "Seconds since the stream last answered (a put or a describe).",
                value=time.monotonic() - m.last_contact,
            )
        if run.config.checkpoint is not None:
            saved = run.checkpoint_saved_at
            yield GaugeMetricFamily(
                "shardline_source_checkpoint_age_seconds",
                "Seconds since the checkpoint last covered every acknowledged batch (or since the start).",
                value=time.monotonic() - (saved if saved is not None else run.started),
            )
        yield from _source_families(run)


def _source_families(run: RunStatus) -> Iterator[Metric]:
    """The source's gauges, one family per name: ``shardline_<name>{labels}``."""
    families: dict[str, GaugeMetricFamily] = {}
    for gauge in run.source_gauges():
        name = f"shardline_{gauge.name}"
        family = families.get(name)
        if family is None:
            family = GaugeMetricFamily(name, gauge.help or gauge.name, labels=sorted(gauge.labels))
            families[name] = family
        keys = family._labelnames
        if tuple(sorted(gauge.labels)) != tuple(keys):
            continue  # a sample that breaks its family's label shape is left out; the scrape goes on
        family.add_metric([str(gauge.labels[k]) for k in keys], gauge.value)
    yield from families.values()


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        return
