"""Data codecs, before and after a change, in one run on one machine.

    uv run python benchmarks/codec_encode.py [--rows 262144] [--before REF] [--repeat 5]

Loads ``core/src/shardline/records.py`` as it was at git ``REF`` (default ``HEAD``) beside the
working tree's, and times on the same batches (65,536 rows, the sink's ~100-byte JSON rows of
``sink_throughput.make_rows``):

* ``json``: the json codec alone; ``arrow``: the arrow codec alone (and its ratio to ``json``);
* ``encode``: ``map_columns`` + ``place`` with a partition key (the sink's encode-only work);
* ``json nested``: the json codec over struct/list/map columns (before: through Python objects).

Best of ``--repeat`` rounds per figure (a burst of load elsewhere does not decide a ratio). Prints
rows/s and the after/before ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from sink_throughput import make_rows

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 65_536


def load_records(ref: str) -> ModuleType:
    """``shardline.records`` as it was at git ``ref`` (imports the current shardline for the rest)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:core/src/shardline/records.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(f"/tmp/shardline_records_{ref.replace('/', '_')}.py")
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("records_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["records_before"] = module
    spec.loader.exec_module(module)
    return module


def nested_rows(n: int) -> pa.Table:
    """Rows with a struct (tz timestamp, string), a list of floats and a map<string,int64>."""
    rng = np.random.default_rng(2)
    at = pa.array(1_700_000_000_000_000 + np.arange(n) * 1000, pa.timestamp("us", tz="UTC"))
    event = pa.StructArray.from_arrays([at, pa.array(["click"] * n)], ["at", "kind"])
    offsets = pa.array(np.arange(0, 3 * n + 1, 3), pa.int32())
    scores = pa.ListArray.from_arrays(offsets, pa.array(np.round(rng.random(3 * n), 3)))
    tags = pa.MapArray.from_arrays(offsets, pa.array(["a", "b", "c"] * n), pa.array(np.arange(3 * n)))
    return pa.table({"id": np.arange(n), "event": event, "scores": scores, "tags": tags})


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--before", default="HEAD", help="git ref of the 'before' records.py")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from shardline import records as after

    before = load_records(args.before)
    batches = make_rows(args.rows, 10_000).to_batches(max_chunksize=CHUNK)
    nested = nested_rows(min(args.rows, CHUNK)).to_batches(max_chunksize=CHUNK)

    def codec(mod: ModuleType, name: str, data: list[pa.RecordBatch]) -> Callable[[], None]:
        fn, mapping = mod.BUILTIN_CODECS[name], mod.RecordMapping()
        return lambda: [fn(b, mapping) for b in data] and None

    def encode(mod: ModuleType) -> Callable[[], None]:
        mapping = mod.RecordMapping(partition_key="customer")
        if "limits" in inspect.signature(mod.map_columns).parameters:  # since the wire seam
            from shardline_v3io.wire import LIMITS, V3IO_WIRE

            return lambda: (
                [mod.place(mod.map_columns(b, mapping, LIMITS), 16, "hash", wire=V3IO_WIRE) for b in batches]
                and None
            )
        return lambda: [mod.place(mod.map_columns(b, mapping), 16, "hash") for b in batches] and None

    rows = args.rows
    figures: dict[str, tuple[float, float, int]] = {}
    for label, make, n in (
        ("json", lambda m: codec(m, "json", batches), rows),
        ("arrow", lambda m: codec(m, "arrow", batches), rows),
        ("encode", encode, rows),
        ("json nested", lambda m: codec(m, "json", nested), nested[0].num_rows),
    ):
        repeat = 1 if label == "arrow" else args.repeat
        t_before = best(make(before), repeat)
        t_after = best(make(after), repeat)
        figures[label] = (n / t_before, n / t_after, n)

    print(f"{'figure':<12} {'before rows/s':>14} {'after rows/s':>14} {'after/before':>13}")
    for label, (rb, ra, _) in figures.items():
        print(f"{label:<12} {rb:>14,.0f} {ra:>14,.0f} {ra / rb:>12.2f}x")
    for when, i in (("before", 0), ("after", 1)):
        ratio = figures["json"][i] / figures["arrow"][i]
        print(f"arrow codec {when}: {ratio:.1f}x slower than json")


if __name__ == "__main__":
    main()
