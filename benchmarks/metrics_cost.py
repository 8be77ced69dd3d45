"""What the Prometheus exporter costs the sink: one backfill with metrics on, one with them off, side by side.

    uv run python benchmarks/metrics_cost.py [--rows 400000] [--repeat 3]

The same Parquet files (sample rows, ~100 bytes of JSON each) go through ``run_pipeline`` into
16-shard streams of one embedded server (``shardline serve --port 0``, a subprocess):

* ``off``: no ``[metrics]`` table (the run's own request statistics, for its summary, still
  observe every request: that is the baseline a user gets);
* ``on``: ``[metrics] port = 0``, and a scraper thread reading ``/metrics`` every 0.5 s the whole
  run (Prometheus scrapes every 15 s by default: this is harsher).

Rounds alternate off/on ``--repeat`` times and the best of each counts, so that a burst of load
from elsewhere on a shared machine does not decide the ratio. Target: on >= 0.95x off.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import shardline
from shardline.pipeline import run_pipeline
from shardline.plugins import register_plugin, unregister_plugin
from shardline_parquet import write_sample
from shardline_v3io.testing_server import start_server

SHARDS = 16


class Scraper:
    """A plugin that scrapes the run's exporter every ``every_s`` seconds while it runs."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @shardline.hookimpl(trylast=True)  # after the exporter announced its address
    def shardline_on_run_started(self, run: Any) -> None:
        url = run.endpoints.get("metrics")
        if url is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(url,), daemon=True)
        self._thread.start()

    @shardline.hookimpl(tryfirst=True)
    def shardline_on_run_finished(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _loop(self, url: str) -> None:
        while not self._stop.wait(self.every_s):
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
            self.scrapes += 1


def pipeline(directory: Path, data: Path, stream: str, metrics: bool) -> Path:
    path = directory / f"{'on' if metrics else 'off'}.toml"
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{data}/*.parquet"
batch_size = 50000

[sink]
stream = "{stream}"
create = {{ shards = {SHARDS} }}

[mapping]
partition_key = "user_id"
"""
        + ("\n[metrics]\nport = 0\n" if metrics else "")
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each; the best counts")
    args = parser.parse_args(argv)
    scraper = Scraper(0.5)
    name = register_plugin(scraper, name="benchmark-scraper")
    best: dict[str, float] = {"off": 0.0, "on": 0.0}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_sample(root / "data", args.rows, files=4, row_group_size=50_000, users=10_000)
            with start_server(root / "store") as server:
                for round_ in range(args.repeat):
                    for mode in ("off", "on"):
                        stream = f"{server.url}/bigdata/cost-{mode}-{round_}"
                        config = pipeline(root, root / "data", stream, mode == "on")
                        started = time.perf_counter()
                        summary = run_pipeline(config)
                        seconds = time.perf_counter() - started
                        assert summary.records == args.rows, summary.line()
                        rate = args.rows / seconds
                        best[mode] = max(best[mode], rate)
                        print(f"round {round_ + 1} metrics {mode:>3}: {rate:>10,.0f} rows/s", flush=True)
    finally:
        unregister_plugin(name)
    ratio = best["on"] / best["off"]
    print(f"\nbest: off {best['off']:,.0f} rows/s, on {best['on']:,.0f} rows/s ({scraper.scrapes} scrapes)")
    print(f"metrics on / off: {ratio:.3f}x (target >= 0.95x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
