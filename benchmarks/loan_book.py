"""Benchmark: the loan book's set-wise transform against the day-by-day one of an earlier revision, on the same inputs.

    .venv/bin/python -m benchmarks.loan_book [--scale 10] [--days 60] [--range-days 10 23] [--repeats 3]
        [--baseline a8b6fbc]

Setup (timed apart, not compared): the simulator lands ``--days`` business days of a lender from its first day;
one in-process range run materializes raw and every core asset of a single day, then one range run the loan book
(and ledger) for every day but the last, as a backfill's chained run would. Then, on one Spark session, the book's
transform (``loan_daily_status_frame``) runs over the very inputs the asset reads, both ways, alternating,
``--repeats`` times each: this checkout's (``setwise``) and the one in ``assets/lending/core.py`` at git revision
``--baseline`` (``day_by_day``: a loop over the days, each re-aggregating the payment and schedule history), loaded
from ``git show`` into a module of its own. Shapes:

- ``last day``: the last day from the book of the day before it, as a daily run computes it;
- ``range of N days``: the last N days (each of ``--range-days``) from the book of the day before them, as a
  backfill's run does (23 is a backfill chunk).

Each result is written to Spark's ``noop`` sink (every column computed, nothing stored), so a measurement is the
read, the transform and its shuffles, not the lake commit. The two ways must give the same rows (checked once per
shape). Per measurement: wall seconds, and CPU seconds of this process and its children (the Spark JVM). Writes the
``loan_book`` section of docs/benchmarks.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import cast

import dagster as dg
import psutil
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from assets.lending.contract import LENDING_START, business_days
from assets.lending.landing import LandingZone
from assets.lending.loan_book import loan_daily_status_frame
from assets.lending.simulator import simulate
from assets.lending.tables import (
    CORE_CHARGE_OFFS,
    CORE_CLOSED_LOANS,
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_PAYMENTS,
    CORE_REFUNDS,
    CORE_REPAYMENT_SCHEDULE,
    OPEN_STATUSES,
    PARTITION,
)
from assets.lending.world import SimulationConfig
from batch_platform.datasets import Step
from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource
from benchmarks.lending_day import Monitor, pipeline_assets, resources_for, run_assets
from benchmarks.markdown import environment, update_section

MARKER_START = "<!-- loan_book:start -->"
MARKER_END = "<!-- loan_book:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
WAYS = ("setwise", "day_by_day")
BookTransform = Callable[..., DataFrame]


@dataclass
class Shape:
    """One shape of run (the last day, or a range): its days and every measurement of both ways."""

    name: str
    days: list[date]
    rows: int = 0
    day_by_day_rows: int = 0  # it also carries every loan closed before
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


def baseline_transform(revision: str) -> BookTransform:
    """``loan_daily_status_frame`` of ``assets/lending/core.py`` at a git revision, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:assets/lending/core.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"core_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{revision}:assets/lending/core.py", "exec"), module.__dict__)
    return cast(BookTransform, module.loan_daily_status_frame)


def book_inputs(
    spark: SparkSession, lake: IcebergLakeResource, days: Sequence[date], transforms: dict[str, BookTransform]
) -> tuple[Callable[[str], DataFrame], DataFrame]:
    """The book of ``days`` from the book of the business day before them, read as the asset reads it; and the
    previous book the day-by-day way starts from.

    The day-by-day book never dropped a loan, so its previous book is the lake's plus every loan closed before that
    day (``core/closed_loans``, dated that day): what its own lake would hold."""
    step = Step(partition_keys=[d.isoformat() for d in days], session=spark, resources=None)
    first, last = days[0].isoformat(), days[-1].isoformat()
    in_range, to_date = dg.PartitionKeyRange(first, last), dg.PartitionKeyRange(LENDING_START, last)
    before = lake.read_spark(spark, CORE_LOAN_DAILY_STATUS).where(f"{PARTITION} < DATE'{first}'")
    before_day = before.agg(F.max(PARTITION)).collect()[0][0]
    previous = {"setwise": before.where(F.col(PARTITION) == F.lit(before_day))}
    closed_earlier = lake.read_spark(spark, CORE_CLOSED_LOANS).where(F.col(PARTITION) < F.lit(before_day))
    previous["day_by_day"] = previous["setwise"].unionByName(closed_earlier.withColumn(PARTITION, F.lit(before_day)))

    def build(way: str) -> DataFrame:
        return transforms[way](
            step,
            lake.read_spark(spark, CORE_LOANS, in_range),
            lake.read_spark(spark, CORE_PAYMENTS, to_date),
            lake.read_spark(spark, CORE_REFUNDS, in_range),
            lake.read_spark(spark, CORE_CHARGE_OFFS, in_range),
            lake.read_spark(spark, CORE_REPAYMENT_SCHEDULE, to_date),
            previous[way],
        )

    return build, previous["day_by_day"]


def until_final_row(book: DataFrame) -> DataFrame:
    """The rows of a book that keeps closed loans, up to each loan's first closed row (what the set-wise one keeps)."""
    earlier = Window.partitionBy("loan_id").orderBy(PARTITION).rowsBetween(Window.unboundedPreceding, -1)
    closed_before = F.coalesce(F.max(~F.col("status").isin(*OPEN_STATUSES)).over(earlier), F.lit(False))
    return book.withColumn("_closed_before", closed_before).where(~F.col("_closed_before")).drop("_closed_before")


def measure(shape: Shape, inputs: tuple[Callable[[str], DataFrame], DataFrame], repeats: int) -> None:
    build, day_by_day_previous = inputs
    setwise, day_by_day = build("setwise").cache(), build("day_by_day").cache()
    shape.rows, shape.day_by_day_rows = setwise.count(), day_by_day.count()
    # Final rows are looked for from the previous day on: a loan closed before the range has none in it.
    kept = until_final_row(day_by_day.unionByName(day_by_day_previous)).where(F.col(PARTITION) >= shape.days[0])
    if not (setwise.exceptAll(kept).isEmpty() and kept.exceptAll(setwise).isEmpty()):
        raise SystemExit(f"{shape.name}: the set-wise book differs from the day-by-day one up to final rows")
    last = setwise.where(setwise[PARTITION] == shape.days[-1])
    shape.book = last.count()
    shape.open_loans = last.where(last["status"].isin(*OPEN_STATUSES)).count()
    setwise.unpersist()
    day_by_day.unpersist()
    for _ in range(repeats):
        for way in WAYS:
            cpu, started = _tree_cpu(), time.perf_counter()
            build(way).write.format("noop").mode("overwrite").save()
            shape.wall[way].append(time.perf_counter() - started)
            shape.cpu[way].append(_tree_cpu() - cpu)
            print(f"{shape.name} {way}: {shape.wall[way][-1]:.1f} s", file=sys.stderr, flush=True)


def _s(value: float) -> str:
    return f"{value:,.1f}"


def section(shapes: Sequence[Shape], setup: dict[str, float], args: argparse.Namespace, env: str) -> str:
    header = (
        "| run | days | book rows (day by day) | loans on the last day (open) | set-wise s | day by day s "
        "| set-wise / day by day "
        "| set-wise CPU s | day by day CPU s | CPU ratio | book rows/s, set-wise | book rows/s, day by day |"
    )
    lines = [header, "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for shape in shapes:
        new, old = shape.median("setwise"), shape.median("day_by_day")
        new_cpu, old_cpu = shape.median("setwise", cpu=True), shape.median("day_by_day", cpu=True)
        lines.append(
            f"| {shape.name} | {len(shape.days)} | {shape.rows:,} ({shape.day_by_day_rows:,}) "
            f"| {shape.book:,} ({shape.open_loans:,}) "
            f"| {_s(new)} | {_s(old)} | **{new / old:.2f}** | {_s(new_cpu)} | {_s(old_cpu)} "
            f"| {new_cpu / old_cpu:.2f} | {shape.rows / new:,.0f} | {shape.day_by_day_rows / old:,.0f} |"
        )
    ranges = " ".join(str(n) for n in args.range_days)
    command = (
        f".venv/bin/python -m benchmarks.loan_book --scale {args.scale:g} --days {args.days} "
        f"--range-days {ranges} --repeats {args.repeats} --baseline {args.baseline}"
    )
    return "\n".join(
        [
            MARKER_START,
            "## Loan book: set-wise against day by day",
            "",
            "Generated by `benchmarks/loan_book.py`; re-running it replaces this section (between the markers).",
            "",
            f"Reproduce: `{command}`",
            "",
            f"A lender's first {args.days} business days at simulator scale {args.scale:g}, raw and core materialized "
            f"in-process (setup, not compared: raw and the day's core assets {_s(setup['core'])} s, the book and "
            f"ledger for all days but the last {_s(setup['book'])} s in one range run). Then the book's transform "
            "over the inputs the asset reads, written to Spark's `noop` sink, both ways alternating; medians of "
            f"{args.repeats} each. Set-wise is this checkout's `loan_daily_status_frame`; day by day is the one at "
            f"revision `{args.baseline}`, which never dropped a loan: it starts from the same book plus every loan "
            "closed before (from `core/closed_loans`) and writes their rows too. Up to each loan's final row both ways "
            "gave "
            "the same rows (checked with `exceptAll` both ways, per run shape).",
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
    parser.add_argument(
        "--range-days", type=int, nargs="+", default=[10, 23], help="days of each range shape (the last ones)"
    )
    parser.add_argument("--baseline", default="a8b6fbc", help="git revision of the day-by-day book to compare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    transforms = {"setwise": loan_daily_status_frame, "day_by_day": baseline_transform(args.baseline)}
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
        shapes = [Shape("last day", days[-1:]), *(Shape(f"range of {n} days", days[-n:]) for n in args.range_days)]
        for shape in shapes:
            measure(shape, book_inputs(session, lake, shape.days, transforms), args.repeats)
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
