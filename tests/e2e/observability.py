"""Helpers of the observability tests: scrape an exporter, read the dashboard, pause a run mid-way."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import shardline
from prometheus_client.parser import text_string_to_metric_families
from shardline_parquet import write_sample

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "examples" / "grafana" / "shardline.json"
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """``(status, body)`` of a GET (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str) -> tuple[set[str], Samples]:
    """Family names and ``{(sample name, sorted labels): value}`` of one ``/metrics`` scrape,
    parsed with prometheus-client's own parser."""
    status, text = get(url)
    assert status == 200, text
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (KeyError when absent)."""
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str) -> float:
    """The sum of a sample name over all its label sets (0 when it has none)."""
    return sum(v for (n, _labels), v in samples.items() if n == name)


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of a sample name."""
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def missing_from(families: set[str], names: set[str]) -> set[str]:
    """The names (as PromQL writes them) of no family of a scrape (the parser drops a counter's _total)."""
    return {n for n in names if n not in families and n.removesuffix("_total") not in families}


def dashboard_metrics() -> set[str]:
    """The metric names the dashboard's PromQL expressions use (a histogram's, without ``_bucket``...)."""
    doc = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\bshardline_[a-z0-9_]+", target["expr"]):
                for suffix in _HISTOGRAM_SUFFIXES:
                    if name.endswith(suffix):
                        name = name[: -len(suffix)]
                names.add(name)
    return names


class Pause:
    """A test plugin: holds the sink's event loop after the ``after``-th request, until released.

    While held nothing moves, so a scrape sees a run mid-way, deterministically. It also keeps the
    :class:`~shardline.RunStatus` and, in ``shardline_on_run_finished`` (tryfirst: the exporter is
    still serving), calls ``at_end(run, summary)``.
    """

    def __init__(self, after: int, at_end: Callable[[Any, Any], None], timeout: float = 60.0) -> None:
        self.after = after
        self.at_end = at_end
        self.timeout = timeout
        self.requests = 0
        self.run: Any = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.end_error: BaseException | None = None

    @shardline.hookimpl
    def shardline_on_run_started(self, run: Any) -> None:
        self.run = run

    @shardline.hookimpl(trylast=True)  # the other observers have seen the request it holds
    def shardline_on_request(self) -> None:
        self.requests += 1
        if self.requests == self.after:
            self.held.set()
            self.release.wait(self.timeout)  # a deadline: a failing test never hangs the run

    @shardline.hookimpl(tryfirst=True)
    def shardline_on_run_finished(self, run: Any, summary: Any) -> None:
        try:
            self.at_end(run, summary)
        except BaseException as exc:  # observers' exceptions are swallowed: keep it for the test
            self.end_error = exc


def find_prometheus(workdir: Path) -> Path | None:
    """A Prometheus server binary: on PATH, else Debian's ``prometheus`` package unpacked into
    ``workdir`` (``apt-get download`` + ``dpkg -x``: nothing installed system-wide); else None."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", "prometheus"]
    done = subprocess.run(download, cwd=workdir, capture_output=True, timeout=300, check=False)
    if done.returncode != 0:  # maybe no package list yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, check=False)
        done = subprocess.run(download, cwd=workdir, capture_output=True, timeout=300, check=False)
    debs = sorted(workdir.glob("prometheus_*.deb"))
    if done.returncode != 0 or not debs:
        return None
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(workdir / "root")], check=True, timeout=120)
    binary = workdir / "root" / "usr" / "bin" / "prometheus"
    return binary if binary.exists() else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server that cannot be told to pick one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(check: Callable[[], Any], deadline_s: float, what: str, every_s: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``deadline_s`` naming ``what``."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)  # pacing of a poll with a deadline
    raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what} (last: {last!r})")


def write_backfill(tmp_path: Path, stream: str, rows: int, batch: int) -> Path:
    """A Parquet -> stream pipeline file with ``[metrics] port = 0``: ``rows`` sample rows plus one
    row too large for the stream (a dead letter), 3 shards, a checkpoint and a dead-letter file."""
    data = tmp_path / "data"
    write_sample(data, rows, files=2, row_group_size=1_000, users=40)
    big = pq.read_table(data / "part-00000.parquet").slice(0, 1)
    payload = pa.array(["x" * (1_100_000)], big.schema.field("payload").type)
    big = big.set_column(big.schema.get_field_index("payload"), "payload", payload)
    pq.write_table(big, data / "part-00002.parquet")  # one row the stream can never take
    config = tmp_path / "backfill.toml"
    config.write_text(
        f"""
[source]
type = "parquet"
path = "{data}/*.parquet"
batch_size = {batch}

[sink]
stream = "{stream}"
create = {{ shards = 3 }}
dead_letter = "{tmp_path / "dead.jsonl"}"
[sink.limits]
max_in_flight_requests = 2

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{tmp_path / "ckpt"}"

[metrics]
port = 0
"""
    )
    return config
