"""The OpenTelemetry exporter of ``shardline run``: the Prometheus exporter's metrics, pushed over OTLP/HTTP.

A second plugin on the same hooks as :mod:`shardline.metrics_prometheus` (``pip install
"shardline[otel]"``). On with ``[metrics] otlp_endpoint = "http://HOST:4318/v1/metrics"``; pushes
every ``otlp_interval_s`` seconds and once more when the run ends. Names follow OpenTelemetry's
conventions (dots, units apart): ``shardline.sink.records``, ``shardline.sink.request.duration``
(s), ``shardline.kafka.consumer_lag``; a Prometheus behind an OTel collector shows them as the
Prometheus exporter's names. https://opentelemetry.io/docs/specs/semconv/general/metrics/
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from shardline.errors import ConfigError
from shardline.hookspecs import hookimpl
from shardline.metrics import SinkMetrics, error_name, reason_label
from shardline.runstatus import RunStatus

try:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
except ImportError as exc:  # the extra is not installed
    raise ConfigError(
        f'[metrics] otlp_endpoint needs OpenTelemetry: pip install "shardline[otel]" ({exc.name} is missing)'
    ) from None

_SCAN_EVERY_S = 1.0  # how often the hooks look for source gauges not seen yet


def start_otel_exporter(run: RunStatus) -> OtelExporter | None:
    """Start pushing ``run``'s metrics when its pipeline has ``[metrics] otlp_endpoint``."""
    options = run.config.metrics
    if options is None or options.otlp_endpoint is None:
        return None
    from shardline.plugins import register_plugin

    exporter = OtelExporter(run, options.otlp_endpoint, options.otlp_interval_s)
    exporter.plugin_name = register_plugin(exporter, name=f"shardline-otel-{id(run)}")
    run.announce("otlp", options.otlp_endpoint)
    return exporter


class OtelExporter:
    """One run's meter provider; its hook methods record what the sink reports for the run's stream."""

    def __init__(self, run: RunStatus, endpoint: str, interval_s: float) -> None:
        self.run = run
        self.plugin_name: str | None = None
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint), export_interval_millis=interval_s * 1000
        )
        resource = Resource.create({"service.name": "shardline", "shardline.source": run.config.source_type})
        self.provider = MeterProvider(metric_readers=[reader], resource=resource)
        meter = self.provider.get_meter("shardline")
        self.retries = meter.create_counter(
            "shardline.sink.retries", "{record}", "Records sent again, by error."
        )
        self.dead_letters = meter.create_counter(
            "shardline.sink.dead_letters", "{record}", "Records given up, by reason."
        )
        self.duration = meter.create_histogram(
            "shardline.sink.request.duration", "s", "Time from sending a PutRecords request to its answer."
        )
        self.size = meter.create_histogram(
            "shardline.sink.request.records", "{record}", "Records carried by each PutRecords request."
        )
        sink_counters: dict[str, Callable[[SinkMetrics], float]] = {
            "records": lambda m: m.records,
            "bytes": lambda m: m.bytes,
            "requests": lambda m: m.requests,
            "throttled_requests": lambda m: m.throttled_requests,
            "order_breaks": lambda m: m.order_violations,
        }
        for name, read in sink_counters.items():
            meter.create_observable_counter(f"shardline.sink.{name}", [self._sink(read)])
        sink_gauges: dict[str, Callable[[SinkMetrics], float]] = {
            "in_flight_records": lambda m: sum(m.shard_in_flight.values()),
            "in_flight_bytes": lambda m: m.buffered_bytes + m.request_bytes,
            "shards": lambda m: m.shard_count,
        }
        for name, read in sink_gauges.items():
            meter.create_observable_gauge(f"shardline.sink.{name}", [self._sink(read)])
        meter.create_observable_gauge("shardline.sink.shard_allowance", [self._allowance])
        meter.create_observable_counter("shardline.source.rows", [lambda _o: [Observation(run.rows_read)]])
        meter.create_observable_counter(
            "shardline.source.batches_acked", [lambda _o: [Observation(run.batches_acked)]]
        )
        self._meter = meter
        self._source_names: set[str] = set()
        self._scanned = 0.0
        self._lock = threading.Lock()

    def _sink(
        self, read: Callable[[SinkMetrics], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            m = self.run.sink_metrics
            return [Observation(read(m))] if m is not None else []

        return observe

    def _allowance(self, _options: CallbackOptions) -> Iterable[Observation]:
        m = self.run.sink_metrics
        allowance = dict(m.shard_allowance) if m is not None else {}
        return [Observation(v, {"shard": str(shard)}) for shard, v in sorted(allowance.items())]

    def _scan_source_gauges(self) -> None:
        """Create an observable gauge for each source gauge name not seen yet (Kafka's come once it reads)."""
        now = time.monotonic()
        if now - self._scanned < _SCAN_EVERY_S:
            return
        self._scanned = now
        with self._lock:
            for gauge in self.run.source_gauges():
                if gauge.name in self._source_names:
                    continue
                self._source_names.add(gauge.name)
                self._meter.create_observable_gauge(
                    "shardline." + gauge.name.replace("_", ".", 1),
                    [self._source(gauge.name)],
                    description=gauge.help,
                )

    def _source(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(g.value, dict(g.labels)) for g in self.run.source_gauges() if g.name == name]

        return observe

    # -- hooks -----------------------------------------------------------------------------------

    @hookimpl
    def shardline_on_request(self, stream: str, records: int, seconds: float) -> None:
        """Record a request's latency and size."""
        if stream == self.run.stream:
            self.duration.record(seconds)
            self.size.record(records)
            self._scan_source_gauges()

    @hookimpl
    def shardline_on_retry(self, stream: str, records: int, error: str) -> None:
        """Count retried records by error name."""
        if stream == self.run.stream:
            self.retries.add(records, {"error": error_name(error)})

    @hookimpl
    def shardline_on_dead_letter(self, stream: str, reason: str) -> None:
        """Count a dead letter by reason."""
        if stream == self.run.stream:
            self.dead_letters.add(1, {"reason": reason_label(reason)})

    @hookimpl(trylast=True)
    def shardline_on_run_finished(self, run: RunStatus, summary: Any) -> None:
        """Push the final numbers, stop, and leave the plugin manager."""
        if run is not self.run:
            return
        self._scanned = 0.0
        self._scan_source_gauges()
        self.provider.shutdown()  # collects and exports once more, then stops the reader
        if self.plugin_name is not None:
            from shardline.plugins import unregister_plugin

            unregister_plugin(self.plugin_name)
