"""Peak memory of a Parquet backfill does not grow with the size of the data.

Backfills a small and a large Parquet directory (default 1 M and 10 M rows; the large one is
>= 1 GB on disk) into the embedded stream server with ``shardline run``, each in its own process,
and reports the peak RSS of each run (``ru_maxrss`` of the child, from ``os.wait4``; the server
runs in another process and is not counted) and their ratio. Target: the large run's peak RSS
within 20% of the small run's.

    uv run python benchmarks/backfill_memory.py                       # 1 M vs 10 M rows
    uv run python benchmarks/backfill_memory.py --small 100000 --large 1000000   # quicker

Data goes to ``bench-data/backfill/`` (gitignored) and is reused by later runs; the server's
store goes to a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shardline_parquet.sample import write_sample
from shardline_v3io.testing_server import start_server

REPO = Path(__file__).resolve().parents[1]
SHARDLINE = str(Path(sys.executable).with_name("shardline"))


def dataset(root: Path, rows: int, payload: int) -> Path:
    """A directory of sample Parquet files with ``rows`` rows (written once, then reused)."""
    directory = root / f"rows-{rows}-payload-{payload}"
    marker = directory / "_COMPLETE"
    if not marker.exists():
        shutil.rmtree(directory, ignore_errors=True)
        files = max(1, rows // 1_000_000) * 2
        started = time.monotonic()
        write_sample(
            directory, rows, files=files, row_group_size=100_000, users=10_000, payload_bytes=payload
        )
        marker.write_text(json.dumps({"rows": rows, "seconds": time.monotonic() - started}))
    return directory


def size_on_disk(directory: Path) -> int:
    """Bytes of the Parquet files in ``directory``."""
    return sum(p.stat().st_size for p in directory.glob("*.parquet"))


def backfill(data: Path, stream: str, workdir: Path) -> dict[str, object]:
    """Run ``shardline run`` on ``data`` into ``stream``; return its peak RSS, time and summary line."""
    config = workdir / f"{data.name}.toml"
    config.write_text(
        f"""
[source]
type = "parquet"
path = "{data}"
batch_size = 10000

[sink]
stream = "{stream}"
create = {{ shards = 8 }}

[mapping]
partition_key = "user_id"

[checkpoint]
path = "{workdir / (data.name + ".ckpt")}"
"""
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [SHARDLINE, "run", str(config), "--no-progress"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"shardline run failed ({proc.returncode}): {output}")
    return {
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "seconds": seconds,
        "summary": output.strip().splitlines()[-1],
    }


def baseline_rss() -> float:
    """Peak RSS (MiB) of a process that only imports shardline and loads the plugins."""
    proc = subprocess.Popen([SHARDLINE, "plugins"], stdout=subprocess.DEVNULL)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1024


def main() -> None:
    """Generate (or reuse) both datasets, backfill each, print the peak RSS of both and the ratio."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=1_000_000, help="rows of the small dataset")
    parser.add_argument("--large", type=int, default=10_000_000, help="rows of the large dataset")
    parser.add_argument("--payload", type=int, default=200, help="random hex characters per row")
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench-data" / "backfill")
    args = parser.parse_args()

    small = dataset(args.data_dir, args.small, args.payload)
    large = dataset(args.data_dir, args.large, args.payload)
    print(f"small: {args.small:,} rows, {size_on_disk(small) / 2**20:,.0f} MiB of Parquet in {small}")
    print(f"large: {args.large:,} rows, {size_on_disk(large) / 2**20:,.0f} MiB of Parquet in {large}")
    print(f"baseline (shardline plugins): peak RSS {baseline_rss():,.0f} MiB")

    with tempfile.TemporaryDirectory(prefix="shardline-bench-") as tmp:
        work = Path(tmp)
        with start_server(work / "store") as server:
            results = {}
            for name, data in (("small", small), ("large", large)):
                results[name] = backfill(data, f"{server.url}/bigdata/bench-{name}", work)
                print(
                    f"{name}: peak RSS {results[name]['peak_rss_mib']:,.0f} MiB, {results[name]['summary']}"
                )
    ratio = float(results["large"]["peak_rss_mib"]) / float(results["small"]["peak_rss_mib"])  # type: ignore[arg-type]
    verdict = "within" if ratio <= 1.2 else "NOT within"
    print(f"peak RSS ratio large/small: {ratio:.3f} ({verdict} the 20% target)")


if __name__ == "__main__":
    main()
