"""What cheap resumes cost: checkpoints after every ack, and the in-flight cap, side by side in one run.

    uv run python benchmarks/resume_cost.py [--rows 1000000] [--rounds 3] [--caps 2 4 8 16 32 64]

One embedded server (subprocess), one Parquet dataset of ~100-byte JSON rows (``write_sample`` with
no payload: seq, user_id, kind, amount, ts), 1,000 users, a 16-shard stream per run, the
single-process pipeline (``run_pipeline``) with its default settings except what is varied:

* **checkpoint**: ``[checkpoint] interval_s = 0`` (the default: after every acknowledged batch,
  coalesced, one write at a time) against ``interval_s = 1`` (the old default) and no checkpoint;
* **cap**: ``max_in_flight_bytes`` of each ``--caps`` MiB, with the default checkpoint. For each
  cap it also prints the most rows a kill -9 can re-send: the rows the cap admits unacknowledged
  (``cap / 2 / bytes per encoded record``: the engine reserves a request body per queued byte)
  plus one source batch (acks are per batch) plus the acks of one checkpoint write.

Every configuration runs ``--rounds`` times, interleaved in a shuffled order, and the best round
counts (a burst of load from elsewhere on a shared machine must not decide a ratio). Prints
rows/s, the CPU seconds of this process per million rows (a steadier measure of the checkpoint
writer's cost on a busy machine), their ratios, and the cost of one checkpoint write alone.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from shardline.pipeline import run_pipeline
from shardline.records import RecordMapping, map_columns, place
from shardline_parquet import write_sample
from shardline_parquet.sample import sample_batch
from shardline_v3io.testing_server import start_server

SHARDS = 16
BATCH = 10_000  # the Parquet source's default batch_size


def record_bytes() -> float:
    """Bytes the engine counts per encoded record of these rows (fragment + raw Data)."""
    batch = sample_batch(0, 10_000, users=1000, payload_bytes=0)
    enc = place(map_columns(batch, RecordMapping(partition_key="user_id")), SHARDS)
    return enc.nbytes / enc.num_records


def config_text(data: Path, stream: str, checkpoint: str) -> str:
    return f"""
[source]
type = "parquet"
path = "{data}/*.parquet"

[sink]
stream = "{stream}"
create = {{ shards = {SHARDS} }}

[mapping]
partition_key = "user_id"
{checkpoint}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--caps", type=int, nargs="*", default=[2, 4, 8, 16, 32, 64], help="MiB")
    args = parser.parse_args()
    per_record = record_bytes()
    with tempfile.TemporaryDirectory(prefix="shardline-resume-") as tmp_name:
        tmp = Path(tmp_name)
        write_sample(tmp / "data", args.rows, files=4, row_group_size=100_000, users=1000, payload_bytes=0)
        runs: dict[str, list[str]] = {
            "checkpoint every ack (coalesced)": ["checkpoint.interval_s=0"],
            "checkpoint every 1 s (old default)": ["checkpoint.interval_s=1"],
            "no checkpoint": ["NOCHECKPOINT"],
        }
        for cap in args.caps:
            runs[f"cap {cap} MiB"] = ["checkpoint.interval_s=0", f"sink.limits.max_in_flight_bytes={cap}MiB"]
        best: dict[str, float] = {}
        least_cpu: dict[str, float] = {}  # CPU seconds of this process per million rows
        n = 0
        with start_server(tmp / "store") as server:
            order = list(runs)
            for round_no in range(args.rounds):
                random.Random(round_no).shuffle(order)  # no configuration always first (position bias)
                for name in order:
                    overrides = runs[name]
                    n += 1
                    stream = f"{server.url}/bigdata/resume-{n}"
                    checkpoint = ""
                    if overrides != ["NOCHECKPOINT"]:
                        checkpoint = f'[checkpoint]\npath = "{tmp}/ck/{n}.ckpt"\n'
                    cfg = tmp / f"p{n}.toml"
                    cfg.write_text(config_text(tmp / "data", stream, checkpoint))
                    sets = [o for o in overrides if o != "NOCHECKPOINT"]
                    started, cpu0 = time.perf_counter(), _cpu()
                    summary = run_pipeline(cfg, sets)
                    seconds, cpu = time.perf_counter() - started, _cpu() - cpu0
                    assert summary.records == args.rows, summary.line()
                    rate = args.rows / seconds
                    best[name] = max(best.get(name, 0.0), rate)
                    least_cpu[name] = min(least_cpu.get(name, float("inf")), cpu / args.rows * 1e6)
                    print(
                        f"round {round_no + 1}: {name}: {rate:,.0f} rows/s "
                        f"({summary.checkpoint_writes} checkpoint writes)",
                        file=sys.stderr,
                    )
    base = best["no checkpoint"]
    print(
        f"\n{args.rows:,} rows of ~100-byte JSON, {per_record:.0f} bytes per encoded record, "
        f"best of {args.rounds}"
    )
    print("CPU: seconds of this process (reader, encoding, sink, checkpoint threads) per million rows;")
    print("less sensitive than rows/s to load from elsewhere on a shared machine")
    print(f"{'configuration':40} {'rows/s':>10} {'ratio':>7} {'CPU s/M':>8} {'ratio':>7} {'max re-sent':>12}")
    base_cpu = least_cpu["no checkpoint"]
    for name in ("no checkpoint", "checkpoint every 1 s (old default)", "checkpoint every ack (coalesced)"):
        print(
            f"{name:40} {best[name]:>10,.0f} {best[name] / base:>7.3f} {least_cpu[name]:>8.2f} "
            f"{base_cpu / least_cpu[name]:>7.3f} {'':>12}"
        )
    top = best[f"cap {max(args.caps)} MiB"]
    top_cpu = least_cpu[f"cap {max(args.caps)} MiB"]
    for cap in args.caps:
        name = f"cap {cap} MiB"
        bound = int(cap * 2**20 / 2 / per_record) + BATCH
        print(
            f"{name:40} {best[name]:>10,.0f} {best[name] / top:>7.3f} {least_cpu[name]:>8.2f} "
            f"{top_cpu / least_cpu[name]:>7.3f} {bound:>12,}"
        )
    ok = [cap for cap in args.caps if best[f"cap {cap} MiB"] >= 0.95 * top]
    print(f"smallest cap keeping >= 0.95x the {max(args.caps)} MiB rate: {min(ok)} MiB")
    wall, cpu = checkpoint_write_cost()
    per_second = best["checkpoint every ack (coalesced)"] / BATCH  # at most one write per acked batch
    print(
        f"one checkpoint write: {wall * 1e3:.2f} ms wall (fsync included), {cpu * 1e3:.3f} ms CPU; "
        f"at {per_second:.0f} acked batches/s that is {per_second * cpu:.2%} of one core"
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def checkpoint_write_cost(writes: int = 200) -> tuple[float, float]:
    """Wall and CPU seconds of one :meth:`CheckpointStore.save` of a Parquet source's state."""
    from shardline import CheckpointStore

    state = {
        "format": 2, "file": "/data/events/part-00003.parquet", "relative": "part-00003.parquet",
        "partition": {}, "file_index": 3, "row_group": 17, "row_offset": 40_000, "rows": 12_345_678,
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="shardline-ckpt-") as tmp:
        store = CheckpointStore(Path(tmp) / "p.ckpt", "f" * 32)
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        for i in range(writes):
            store.save({**state, "rows": i}, stream="http://127.0.0.1/bigdata/x", pid=1)
        return (time.perf_counter() - wall0) / writes, (time.thread_time() - cpu0) / writes


if __name__ == "__main__":
    main()
