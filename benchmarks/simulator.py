"""Benchmark: one business day of landing data at the scale that makes over a million payments.

    python -m benchmarks.simulator [--scale 130] [--date 2025-04-15] [--workers 2] [--landing DIR]

The day is a Tuesday (one calendar day) well past the first two years, so every term is in its steady state.
Prints rows, bytes and encoding seconds per dataset, then the totals (wall clock and CPU). Generation is one pass
over the loan book for all datasets together, so its time is reported once.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Sequence
from datetime import date

from assets.lending.landing import LandingZone, parquet_bytes, sha256_hex, write_drop
from assets.lending.simulator import DATASETS, DEFAULT_WORLD_START, SimulationConfig, build_drop, drop_window
from assets.lending.world import World

BENCHMARK_SCALE = 130.0  # about 1.2 million payment rows on the benchmark day
BENCHMARK_DATE = date(2025, 4, 15)
WORLD_START = DEFAULT_WORLD_START


def run(scale: float, business_date: date, landing_root: str, workers: int = 1) -> int:
    config = SimulationConfig(seed=1, start=WORLD_START, scale=scale)
    first, last = drop_window(config, business_date)
    print(f"scale {scale}: business date {business_date} (events {first}..{last}), world since {WORLD_START}")
    print(f"workers: {workers}")

    started, started_cpu = time.perf_counter(), time.process_time()
    tables = build_drop(config, business_date, world=World(config), workers=workers)
    generated, generated_cpu = time.perf_counter() - started, time.process_time() - started_cpu

    print(f"{'dataset':20s} {'rows':>10s} {'bytes':>12s} {'encode s':>9s}")
    for name in DATASETS:
        encode_started = time.perf_counter()
        data = parquet_bytes(tables[name])
        sha256_hex(data)
        encoded = time.perf_counter() - encode_started
        print(f"{name:20s} {tables[name].num_rows:10,d} {len(data):12,d} {encoded:9.2f}")

    landing = LandingZone.local(landing_root)
    write_started = time.perf_counter()
    drop = write_drop(landing, business_date, 1, first, tables)
    written = time.perf_counter() - write_started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # CPU seconds too: on a shared machine the wall clock also counts other people's work (this process only: a
    # worker's CPU is not in it).
    print(f"generate all datasets (one pass over the book): {generated:.2f} s wall, {generated_cpu:.2f} s CPU")
    print(f"write the drop (encode, checksum, write, manifest): {written:.2f} s")
    print(f"payments: {drop.rows('payments'):,d}; peak memory {peak_mib:,.0f} MiB")
    if drop.rows("payments") < 1_000_000:
        print("warning: under a million payments; raise --scale")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=BENCHMARK_SCALE)
    parser.add_argument("--date", type=date.fromisoformat, default=BENCHMARK_DATE)
    parser.add_argument("--landing", help="keep the drop in this folder (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the cohorts (2 on two free cores)")
    args = parser.parse_args(argv)
    if args.landing:
        return run(args.scale, args.date, args.landing, args.workers)
    with tempfile.TemporaryDirectory() as folder:
        return run(args.scale, args.date, folder, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
