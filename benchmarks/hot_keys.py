"""Rows/s of the default ordering (``strict``) next to ``none``, by key count and fault rate, in one run.

    uv run python benchmarks/hot_keys.py                  # the table of the delivery-guarantees issue
    uv run python benchmarks/hot_keys.py --curve          # plus the fault-rate curve 0.3/0.5/0.6/0.8
    uv run python benchmarks/hot_keys.py --keys 100 --rounds 3

One embedded server per fault setting (``shardline serve --port 0`` in a subprocess, ``--fault-rate F
--fault-shape random|tail``: F of the records of every PutRecords refused with a retryable error).
Each case writes rows of ~60 bytes of JSON (``i``, ``k``, a payload) keyed ``hot-{i % keys}`` into a
fresh 4-shard stream with :class:`shardline.StreamSink` (default settings but ``ordering``), in
5,000-row batches, and times write + flush. ``strict`` and ``none`` alternate within a round and the
best of ``--rounds`` rounds counts (a shared machine swings). ``none``'s ``order_violations`` (keys
whose order the stream broke in one response, counted by the sink) are printed beside it.

The number of rows per case shrinks with few keys (``strict`` sends at most one record per key per
round trip, so 4 hot keys are bound by the round-trip time: that is the price of the guarantee, and
the reason the table shows it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from shardline import StreamSink
from shardline_v3io.testing_server import start_server

SHARDS = 4
BATCH = 5_000


def rows_for(keys: int, fault: float) -> int:
    """Rows per case: enough to take about a second or more in the slower mode."""
    base = {4: 10_000, 100: 100_000}.get(keys, 300_000)
    return int(base * (0.5 if fault >= 0.5 and keys <= 100 else 1.0))


def batches(n: int, keys: int) -> list[pa.RecordBatch]:
    out = []
    for start in range(0, n, BATCH):
        ids = list(range(start, min(n, start + BATCH)))
        out.append(
            pa.record_batch(
                {"i": ids, "k": [f"hot-{i % keys}" for i in ids], "payload": ["x" * 32] * len(ids)}
            )
        )
    return out


def one(url: str, data: list[pa.RecordBatch], ordering: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    with StreamSink(url, partition_key="k", ordering=ordering, create={"shards": SHARDS}) as sink:
        for batch in data:
            sink.write(batch)
        sink.flush(timeout=900)
        elapsed = time.perf_counter() - started
        metrics = sink.metrics.snapshot()
    return elapsed, metrics


def run_case(server: Any, keys: int, fault: float, rounds: int, tag: str) -> dict[str, Any]:
    n = rows_for(keys, fault)
    data = batches(n, keys)
    best: dict[str, float] = {}
    violations = 0
    for r in range(rounds):
        for ordering in ("strict", "none"):
            url = f"{server.url}/bigdata/{tag}-{ordering}-{keys}-{r}"
            elapsed, metrics = one(url, data, ordering)
            rate = n / elapsed
            best[ordering] = max(best.get(ordering, 0.0), rate)
            if ordering == "none":
                violations += int(metrics["order_violations"])
    return {"rows": n, **best, "violations": violations / rounds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, nargs="*", default=[4, 100, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--curve", action="store_true", help="also measure 100 keys at 0.3, 0.5, 0.6, 0.8")
    args = parser.parse_args()
    settings = [(0.0, "random"), (0.3, "random"), (0.3, "tail")]
    rows: list[tuple[str, int, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for fault, shape in settings:
            label = "no faults" if not fault else f"{fault:.0%} {shape}"
            with start_server(Path(tmp) / f"{shape}-{fault}", fault_rate=fault, fault_shape=shape) as server:
                for keys in args.keys:
                    result = run_case(server, keys, fault, args.rounds, f"{shape}{int(fault * 100)}")
                    rows.append((label, keys, result))
                    print_row(label, keys, result, header=len(rows) == 1)
        if args.curve:
            print()
            for fault in (0.3, 0.5, 0.6, 0.8):
                with start_server(Path(tmp) / f"curve-{fault}", fault_rate=fault) as server:
                    result = run_case(server, 100, fault, args.rounds, f"curve{int(fault * 100)}")
                    print_row(f"{fault:.0%} random", 100, result, header=fault == 0.3)
    ratios = [r["strict"] / r["none"] for _, keys, r in rows if keys >= 10_000 and r.get("none")]
    if ratios:
        print(f"\nstrict / none with >= 10,000 keys: median {statistics.median(ratios):.2f}x")


def print_row(label: str, keys: int, result: dict[str, Any], *, header: bool) -> None:
    if header:
        print("| faults | keys | rows | strict rows/s | none rows/s | strict/none | none: keys broken |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    ratio = result["strict"] / result["none"] if result["none"] else float("nan")
    print(
        f"| {label} | {keys:,} | {result['rows']:,} | {result['strict']:,.0f} | {result['none']:,.0f} | "
        f"{ratio:.2f}x | {result['violations']:,.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
