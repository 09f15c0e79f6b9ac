"""Benchmark: the loan book's transform carrying unchanged loans, against recomputing every loan, on the same inputs.

    .venv/bin/python -m benchmarks.loan_book [--scale 10] [--days 60] [--range-days 10] [--repeats 3]

Setup (timed apart, not compared): the simulator lands ``--days`` business days of a lender from its first day;
one in-process range run materializes raw and every core asset of a single day, then one range run the loan book
(and ledger) for every day but the last, as a backfill's chained run would. Then, on one Spark session, the book's
transform (``build_loan_book``) runs over the very inputs the asset reads, both ways, alternating, ``--repeats``
times each:

- ``last day``: the last day from the book of the day before it, as a daily run computes it;
- ``range``: the last ``--range-days`` days from the book of the day before them, as a backfill's run does.

Each result is written to Spark's ``noop`` sink (every column computed, nothing stored), so a measurement is the
read, the transform and its shuffles, not the lake commit. The two ways must give the same rows (checked once per
shape). Per measurement: wall seconds, and CPU seconds of this process and its children (the Spark JVM). Writes the
``loan_book`` section of docs/benchmarks.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import psutil
from pyspark.sql import DataFrame, SparkSession

from assets.lending.contract import LENDING_START, business_days
from assets.lending.landing import LandingZone
from assets.lending.simulator import simulate
from assets.lending.tables import (
    CORE_CHARGE_OFFS,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_PAYMENTS,
    CORE_REFUNDS,
    CORE_REPAYMENT_SCHEDULE,
    OPEN_STATUSES,
    PARTITION,
)
from assets.lending.world import SimulationConfig
from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource
from benchmarks.lending_day import Monitor, pipeline_assets, resources_for, run_assets
from benchmarks.markdown import environment, update_section

MARKER_START = "<!-- loan_book:start -->"
MARKER_END = "<!-- loan_book:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
WAYS = {"carry": True, "recompute": False}


@dataclass
class Shape:
    """One shape of run (the last day, or a range): its days and every measurement of both ways."""

    name: str
    days: list[date]
    rows: int = 0
    book: int = 0  # loans in the book on the last day
    open_loans: int = 0  # of them, current or delinquent
    wall: dict[str, list[float]] = field(default_factory=lambda: {w: [] for w in WAYS})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {w: [] for w in WAYS})

    def median(self, way: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu if cpu else self.wall)[way])


def _tree_cpu() -> float:
    me = psutil.Process()
    times = me.cpu_times()
    total = times.user + times.system
    for child in me.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return float(total)


def book_inputs(spark: SparkSession, lake: IcebergLakeResource, days: Sequence[date]) -> Callable[[bool], DataFrame]:
    """The book of ``days`` from the lake's book of the business day before them, read as the asset reads it."""
    from assets.lending.core import build_loan_book

    first, last = days[0].isoformat(), days[-1].isoformat()
    before = (days[0] - timedelta(days=1)).isoformat()
    in_range, to_date = dg.PartitionKeyRange(first, last), dg.PartitionKeyRange(LENDING_START, last)
    previous = lake.read_spark(spark, CORE_LOAN_DAILY_STATUS).where(f"{PARTITION} <= DATE'{before}'")
    previous = previous.where(previous[PARTITION] == previous.agg({PARTITION: "max"}).collect()[0][0])

    def build(carry: bool) -> DataFrame:
        return build_loan_book(
            [d.isoformat() for d in days],
            lake.read_spark(spark, CORE_LOANS, in_range),
            lake.read_spark(spark, CORE_PAYMENTS, to_date),
            lake.read_spark(spark, CORE_REFUNDS, in_range),
            lake.read_spark(spark, CORE_CHARGE_OFFS, in_range),
            lake.read_spark(spark, CORE_REPAYMENT_SCHEDULE, to_date),
            previous,
            carry_unchanged=carry,
        )

    return build


def measure(shape: Shape, build: Callable[[bool], DataFrame], repeats: int) -> None:
    carried, recomputed = build(True).cache(), build(False).cache()
    shape.rows = carried.count()
    assert recomputed.count() == shape.rows, "the two ways give different row counts"
    assert carried.exceptAll(recomputed).isEmpty() and recomputed.exceptAll(carried).isEmpty(), "different books"
    last = carried.where(carried[PARTITION] == shape.days[-1])
    shape.book = last.count()
    shape.open_loans = last.where(last["status"].isin(*OPEN_STATUSES)).count()
    carried.unpersist()
    recomputed.unpersist()
    for _ in range(repeats):
        for way, carry in WAYS.items():
            cpu, started = _tree_cpu(), time.perf_counter()
            build(carry).write.format("noop").mode("overwrite").save()
            shape.wall[way].append(time.perf_counter() - started)
            shape.cpu[way].append(_tree_cpu() - cpu)
            print(f"{shape.name} {way}: {shape.wall[way][-1]:.1f} s", file=sys.stderr, flush=True)


def _s(value: float) -> str:
    return f"{value:,.1f}"


def section(shapes: Sequence[Shape], setup: dict[str, float], args: argparse.Namespace, env: str) -> str:
    header = (
        "| run | days | book rows | loans on the last day (open) | carry s | recompute s | carry / recompute "
        "| carry CPU s | recompute CPU s | CPU ratio | book rows/s, carry |"
    )
    lines = [header, "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for shape in shapes:
        carry, full = shape.median("carry"), shape.median("recompute")
        carry_cpu, full_cpu = shape.median("carry", cpu=True), shape.median("recompute", cpu=True)
        lines.append(
            f"| {shape.name} | {len(shape.days)} | {shape.rows:,} | {shape.book:,} ({shape.open_loans:,}) "
            f"| {_s(carry)} | {_s(full)} | **{carry / full:.2f}** | {_s(carry_cpu)} | {_s(full_cpu)} "
            f"| {carry_cpu / full_cpu:.2f} | {shape.rows / carry:,.0f} |"
        )
    command = (
        f".venv/bin/python -m benchmarks.loan_book --scale {args.scale:g} --days {args.days} "
        f"--range-days {args.range_days} --repeats {args.repeats}"
    )
    return "\n".join(
        [
            MARKER_START,
            "## Loan book: carrying unchanged loans against recomputing every loan",
            "",
            "Generated by `benchmarks/loan_book.py`; re-running it replaces this section (between the markers).",
            "",
            f"Reproduce: `{command}`",
            "",
            f"A lender's first {args.days} business days at simulator scale {args.scale:g}, raw and core materialized "
            f"in-process (setup, not compared: raw and the day's core assets {_s(setup['core'])} s, the book and "
            f"ledger for all days but the last {_s(setup['book'])} s in one range run). Then `build_loan_book` over "
            "the inputs the asset reads, written to Spark's `noop` sink, both ways alternating; medians of "
            f"{args.repeats} each. Both ways gave the same rows (checked with `exceptAll` both ways, per run shape).",
            "",
            *lines,
            "",
            env,
            MARKER_END,
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--days", type=int, default=60, help="business days of the lender, from its first")
    parser.add_argument("--range-days", type=int, default=10, help="days of the range shape (the last ones)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", module="pyspark.sql.udf")
    scratch = Path(tempfile.mkdtemp(prefix="loan_book_bench_"))
    spark = SparkResource(
        spark_config={
            "spark.master": "local[*]",
            "spark.app.name": "loan_book_benchmark",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": args.driver_memory,
            "spark.sql.shuffle.partitions": "8",
            "spark.local.dir": str(scratch / "spark"),
        }
    )
    monitor = Monitor()
    monitor.start()
    try:
        session = spark.session
        session.sparkContext.setLogLevel("ERROR")
        first = date.fromisoformat(LENDING_START)
        days = list(business_days(first, first + timedelta(days=args.days * 2)))[: args.days]
        landing = scratch / "landing"
        simulate(SimulationConfig(seed=1, start=first, scale=args.scale), days[0], days[-1], LandingZone.local(landing))
        lake = IcebergLakeResource(data_dir=str(scratch / "lake"))
        raw_asset, day_assets, book_assets = pipeline_assets()
        resources, instance = resources_for(spark, lake, landing), dg.DagsterInstance.ephemeral()
        whole, chained = (days[0].isoformat(), days[-1].isoformat()), (days[0].isoformat(), days[-2].isoformat())
        core = run_assets(
            "setup: raw and core", [raw_asset, *day_assets], resources, instance, monitor, key_range=whole
        )
        book = run_assets("setup: book", book_assets, resources, instance, monitor, key_range=chained)
        if not (core.success and book.success):
            raise SystemExit("the setup runs failed")
        shapes = [Shape("last day", days[-1:]), Shape(f"range of {args.range_days} days", days[-args.range_days :])]
        for shape in shapes:
            measure(shape, book_inputs(session, lake, shape.days), args.repeats)
        env = environment(["pyspark", "pyiceberg"], f"Spark local[*], driver memory {args.driver_memory}")
    finally:
        monitor.stop()
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    text = section(shapes, {"core": core.wall_s, "book": book.wall_s}, args, env)
    print(text)
    if not args.no_write:
        update_section(args.output, text, MARKER_START, MARKER_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
