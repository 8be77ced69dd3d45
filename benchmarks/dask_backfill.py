"""A Parquet backfill in one process against the same backfill on a 2-worker Dask LocalCluster, in one run.

    uv run python benchmarks/dask_backfill.py [--rows 2000000] [--rounds 2] [--workers 2]

One embedded server (subprocess), one dataset (``write_sample``: ~100-byte JSON rows, 1,000 users,
4 files), a 16-shard stream per run, default sink settings. Measured, interleaved, best round:

* ``1 process``: ``shardline run`` as usual (``[engine] type = "local"``);
* ``dask shards``: ``[engine] type = "dask"`` on a ``LocalCluster`` of ``--workers`` worker
  processes (started once, before timing; its start-up is printed apart), ``split = "shards"``:
  each worker reads every row and writes its shards' rows (read amplification = workers);
* ``dask files``: the same with ``split = "files"`` (each file read once, no order across files).

Prints rows/s, the ratio to one process, and the read amplification (rows read / rows written).
On one machine the server, the workers and the driver share the cores: the ratio says what a
second process buys here, not what N machines would (see the README of shardline-dask).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from shardline.pipeline import run_pipeline
from shardline_parquet import write_sample
from shardline_v3io.testing_server import start_server

SHARDS = 16


def pipeline(tmp: Path, data: Path, stream: str, name: str, engine: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        f"""
[source]
type = "parquet"
path = "{data}/*.parquet"

[sink]
stream = "{stream}"
create = {{ shards = {SHARDS} }}

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{tmp}/ck/{name}.ckpt"

{engine}
"""
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(prefix="shardline-dask-bench-") as tmp_name:
        tmp = Path(tmp_name)
        write_sample(tmp / "data", args.rows, files=4, row_group_size=100_000, users=1000, payload_bytes=0)
        started = time.perf_counter()
        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            local_directory=str(tmp / "scratch"),
        )
        client = Client(cluster)
        client.run(__import__, "shardline_dask.slot")
        client.run(__import__, "shardline_parquet.source")
        cluster_start = time.perf_counter() - started
        address = cluster.scheduler_address
        engines = {
            "1 process": "",
            "dask shards": f'[engine]\ntype = "dask"\naddress = "{address}"\nsplit = "shards"',
            "dask files": f'[engine]\ntype = "dask"\naddress = "{address}"\nsplit = "files"',
        }
        best: dict[str, float] = {}
        amplification: dict[str, float] = {}
        n = 0
        try:
            with start_server(tmp / "store") as server:
                for round_no in range(args.rounds):
                    for name, engine in engines.items():
                        n += 1
                        stream = f"{server.url}/bigdata/dask-bench-{n}"
                        config = pipeline(tmp, tmp / "data", stream, f"run{n}", engine)
                        t = time.perf_counter()
                        summary = run_pipeline(config)
                        seconds = time.perf_counter() - t
                        assert summary.records == args.rows, summary.line()
                        rate = args.rows / seconds
                        best[name] = max(best.get(name, 0.0), rate)
                        amplification[name] = summary.rows_read / summary.records
                        print(f"round {round_no + 1}: {name}: {rate:,.0f} rows/s", file=sys.stderr)
        finally:
            client.close()
            cluster.close()
    one = best["1 process"]
    print(
        f"\n{args.rows:,} rows of ~100-byte JSON, 16 shards, {args.workers} Dask workers "
        f"(cluster start {cluster_start:.1f} s, not timed), best of {args.rounds}"
    )
    print(f"{'run':16} {'rows/s':>12} {'x 1 process':>12} {'read amplification':>20}")
    for name in engines:
        print(f"{name:16} {best[name]:>12,.0f} {best[name] / one:>12.2f} {amplification[name]:>20.1f}")


if __name__ == "__main__":
    main()
