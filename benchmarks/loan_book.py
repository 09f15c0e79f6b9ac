"""Benchmark: the loan book's transform against the ones of earlier revisions, each on the inputs its asset reads.

    .venv/bin/python -m benchmarks.loan_book [--scale 10] [--days 60] [--range-days 10 23] [--repeats 3]
        [--baselines a8b6fbc 5d4863b]

Setup (timed apart, not compared): the simulator lands ``--days`` business days of a lender from its first day;
one in-process range run materializes raw and every core asset of a single day, then one range run the loan book
(and ledger) for every day but the last, as a backfill's chained run would. Then, on one Spark session, the book's
transform (``loan_daily_status_frame``) runs, alternating, ``--repeats`` times each way: this checkout's and the one
of each ``--baselines`` revision (its ``assets/lending/loan_book.py`` if it has one, else its ``core.py``), loaded
from ``git show`` into modules of their own. Each way reads what its own revision's asset declares
(``read_inputs`` of its ``LOAN_DAILY_STATUS``): a revision whose book re-read the payment and schedule history gets
it, this checkout (whose book carries each open loan's installments) reads the range's drops. A revision without
``core/closed_loans`` never dropped a loan: it starts from the same book plus every loan closed before.
Shapes:

- ``last day``: the last day from the book of the day before it, as a daily run computes it;
- ``range of N days``: the last N days (each of ``--range-days``) from the book of the day before them, as a
  backfill's run does (23 is a backfill chunk).

Each result is written to Spark's ``noop`` sink (every column computed, nothing stored), so a measurement is the
read, the transform and its shuffles, not the lake commit. Every way must give this checkout's rows on the columns
it has, up to each loan's final row (checked once per shape). Per measurement: wall seconds, and CPU seconds of this
process and its children (the Spark JVM). Writes the ``loan_book`` section of docs/benchmarks.md unless
``--no-write``.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
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
from assets.lending.core import LOAN_DAILY_STATUS
from assets.lending.landing import LandingZone
from assets.lending.simulator import simulate
from assets.lending.tables import (
    CORE_CLOSED_LOANS,
    CORE_LOAN_DAILY_STATUS,
    OPEN_STATUSES,
    PARTITION,
)
from assets.lending.world import SimulationConfig
from batch_platform.datasets import LakeDataset, Step, read_inputs
from batch_platform.lake import IcebergLakeResource
from batch_platform.spark import SparkResource
from benchmarks.lending_day import pipeline_assets, resources_for
from benchmarks.markdown import environment, update_section
from benchmarks.runs import Monitor, run_assets

MARKER_START = "<!-- loan_book:start -->"
MARKER_END = "<!-- loan_book:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
THIS = "this checkout"
# Per way: its book's build and the inputs it reads; and the previous book with every loan closed before.
BookInputs = tuple[dict[str, Callable[[], DataFrame]], dict[str, dict[str, DataFrame]], DataFrame]


@dataclass(frozen=True)
class Way:
    """The loan book of one revision (or of this checkout): its dataset, whose transform and inputs are used."""

    name: str
    dataset: LakeDataset
    keeps_closed_loans: bool  # before core/closed_loans, a closed loan stayed in the book


@dataclass
class Shape:
    """One shape of run (the last day, or a range): its days and every measurement of every way."""

    name: str
    days: list[date]
    ways: Sequence[str]
    rows: dict[str, int] = field(default_factory=dict)  # a way that keeps closed loans writes their rows too
    read: dict[str, dict[str, int]] = field(default_factory=dict)  # rows of each input the way reads
    book: int = 0  # loans in the book on the last day
    open_loans: int = 0  # of them, current or delinquent
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

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


def _module_at(revision: str, path: str, name: str, source_edit: Callable[[str], str] = str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:{path}"], check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(name)
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source_edit(source), f"{revision}:{path}", "exec"), module.__dict__)
    return module


def way_at(revision: str) -> Way:
    """The loan book of a git revision: its core module (and its own loan_book module, if it had one)."""
    has_loan_book = (
        subprocess.run(
            ["git", "cat-file", "-e", f"{revision}:assets/lending/loan_book.py"], check=False, capture_output=True
        ).returncode
        == 0
    )
    edit: Callable[[str], str] = str
    if has_loan_book:
        loan_book = _module_at(revision, "assets/lending/loan_book.py", f"loan_book_at_{revision}")
        edit = lambda source: source.replace("assets.lending.loan_book", loan_book.__name__)  # noqa: E731
    core = _module_at(revision, "assets/lending/core.py", f"core_at_{revision}", edit)
    return Way(revision, cast(LakeDataset, core.LOAN_DAILY_STATUS), not hasattr(core, "CLOSED_LOANS"))


def _transform(way: Way, frames: dict[str, DataFrame], step: Step) -> DataFrame:
    """The way's transform on its inputs (not ``run_transform``: that selects this checkout's columns)."""
    parameters = inspect.signature(way.dataset.transform).parameters
    return way.dataset.transform(step=step, **{name: frames[name] for name in parameters if name in frames})


def book_inputs(
    spark: SparkSession, lake: IcebergLakeResource, days: Sequence[date], ways: Sequence[Way]
) -> BookInputs:
    """Per way: the book of ``days`` from the book of the business day before them, and the inputs it reads, read
    as its asset reads them; and the previous book a way that keeps closed loans starts from.

    That previous book is the lake's plus every loan closed before that day (``core/closed_loans``, dated that
    day): what such a way's own lake would hold."""
    keys = [d.isoformat() for d in days]
    step = Step(partition_keys=keys, session=spark, resources=None)
    first = keys[0]
    before = lake.read_spark(spark, CORE_LOAN_DAILY_STATUS).where(f"{PARTITION} < DATE'{first}'")
    before_day = before.agg(F.max(PARTITION)).collect()[0][0]
    previous = before.where(F.col(PARTITION) == F.lit(before_day))
    closed_earlier = lake.read_spark(spark, CORE_CLOSED_LOANS).where(F.col(PARTITION) < F.lit(before_day))
    with_closed = previous.unionByName(closed_earlier.withColumn(PARTITION, F.lit(before_day)))
    builds: dict[str, Callable[[], DataFrame]] = {}
    inputs: dict[str, dict[str, DataFrame]] = {}
    for way in ways:
        frames = read_inputs(way.dataset, lake, spark, keys)
        frames["previous_book"] = with_closed if way.keeps_closed_loans else previous
        inputs[way.name] = frames
        builds[way.name] = functools.partial(_transform, way, frames, step)
    return builds, inputs, with_closed


def carried_state_bytes(spark: SparkSession, lake: IcebergLakeResource, day: date, scratch: Path) -> dict[str, float]:
    """Parquet bytes per row of one day's book, with and without the columns a day carries to the next (the same
    rows through the same writer, one file each), and those columns' share."""
    book = lake.read_spark(spark, CORE_LOAN_DAILY_STATUS, [day.isoformat()]).orderBy("loan_id")
    sizes = {}
    for name, frame in {"with": book, "without": book.drop("schedule_version", "installments")}.items():
        path = scratch / f"state_bytes_{name}"
        frame.coalesce(1).write.mode("overwrite").parquet(str(path))
        sizes[name] = sum(f.stat().st_size for f in path.glob("*.parquet"))
    rows = book.count()
    return {"rows": rows, "with": sizes["with"] / rows, "without": sizes["without"] / rows}


def until_final_row(book: DataFrame) -> DataFrame:
    """The rows of a book that keeps closed loans, up to each loan's first closed row (what the set-wise one keeps)."""
    earlier = Window.partitionBy("loan_id").orderBy(PARTITION).rowsBetween(Window.unboundedPreceding, -1)
    closed_before = F.coalesce(F.max(~F.col("status").isin(*OPEN_STATUSES)).over(earlier), F.lit(False))
    return book.withColumn("_closed_before", closed_before).where(~F.col("_closed_before")).drop("_closed_before")


def measure(shape: Shape, ways: Sequence[Way], inputs: BookInputs, repeats: int) -> None:
    builds, frames, with_closed = inputs
    books = {way.name: builds[way.name]().cache() for way in ways}
    this = books[THIS]
    for way in ways:
        shape.rows[way.name] = books[way.name].count()
        shape.read[way.name] = {name: frame.count() for name, frame in frames[way.name].items()}
        if way.name == THIS:
            continue
        theirs = books[way.name]
        if way.keeps_closed_loans:
            # Final rows are looked for from the previous day on: a loan closed before the range has none in it.
            theirs = until_final_row(theirs.unionByName(with_closed.select(*theirs.columns)))
            theirs = theirs.where(F.col(PARTITION) >= shape.days[0])
        ours = this.select(*theirs.columns)
        if not (ours.exceptAll(theirs).isEmpty() and theirs.exceptAll(ours).isEmpty()):
            raise SystemExit(f"{shape.name}: this checkout's book differs from {way.name}'s up to final rows")
    last = this.where(this[PARTITION] == shape.days[-1])
    shape.book = last.count()
    shape.open_loans = last.where(last["status"].isin(*OPEN_STATUSES)).count()
    for book in books.values():
        book.unpersist()
    for _ in range(repeats):
        for way in ways:
            cpu, started = _tree_cpu(), time.perf_counter()
            builds[way.name]().write.format("noop").mode("overwrite").save()
            shape.wall.setdefault(way.name, []).append(time.perf_counter() - started)
            shape.cpu.setdefault(way.name, []).append(_tree_cpu() - cpu)
            print(f"{shape.name} {way.name}: {shape.wall[way.name][-1]:.1f} s", file=sys.stderr, flush=True)


def _s(value: float) -> str:
    return f"{value:,.1f}"


def section(
    shapes: Sequence[Shape], setup: dict[str, float], state: dict[str, float], args: argparse.Namespace, env: str
) -> str:
    lines = [
        "| run | days | loans on the last day (open) | way | book rows written | payments / schedule rows read "
        "| wall s | CPU s | this checkout / way: wall, CPU | book rows/s |",
        "|:---|---:|---:|:---|---:|---:|---:|---:|:---|---:|",
    ]
    for shape in shapes:
        ours, ours_cpu = shape.median(THIS), shape.median(THIS, cpu=True)
        for way in shape.ways:
            wall, cpu = shape.median(way), shape.median(way, cpu=True)
            read = shape.read[way]
            ratio = "" if way == THIS else f"**{ours / wall:.2f}**, {ours_cpu / cpu:.2f}"
            lines.append(
                f"| {shape.name} | {len(shape.days)} | {shape.book:,} ({shape.open_loans:,}) | {way} "
                f"| {shape.rows[way]:,} | {read['payments']:,} / {read['schedule']:,} | {_s(wall)} | {_s(cpu)} "
                f"| {ratio} | {shape.rows[way] / wall:,.0f} |"
            )
    ranges = " ".join(str(n) for n in args.range_days)
    command = (
        f".venv/bin/python -m benchmarks.loan_book --scale {args.scale:g} --days {args.days} "
        f"--range-days {ranges} --repeats {args.repeats} --baselines {' '.join(args.baselines)}"
    )
    return "\n".join(
        [
            MARKER_START,
            "## Loan book: this checkout against earlier revisions",
            "",
            "Generated by `benchmarks/loan_book.py`; re-running it replaces this section (between the markers).",
            "",
            f"Reproduce: `{command}`",
            "",
            f"A lender's first {args.days} business days at simulator scale {args.scale:g}, raw and core materialized "
            f"in-process (setup, not compared: raw and the day's core assets {_s(setup['core'])} s, the book and "
            f"ledger for all days but the last {_s(setup['book'])} s in one range run). Then each way's "
            "`loan_daily_status_frame` over the inputs its own revision's asset declares, written to Spark's `noop` "
            f"sink, the ways alternating; medians of {args.repeats} each. A revision without `core/closed_loans` "
            "never dropped a loan: it starts from the same book plus every loan closed before and writes their rows "
            "too. Up to each loan's final row every way gave this checkout's rows on the columns it has (checked "
            "with `exceptAll` both ways, per run shape).",
            "",
            *lines,
            "",
            f"Storage: the book of the day before the last ({state['rows']:,.0f} rows), written as one Parquet file "
            f"by Spark, takes {state['with']:,.1f} bytes a row; without the columns a day carries to the next "
            f"(`schedule_version`, `installments`) {state['without']:,.1f} bytes a row "
            f"({state['with'] / state['without']:.2f}x).",
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
        "--range-days",
        type=int,
        nargs="*",
        default=[10, 23],
        help="days of each range shape (the last ones; none: the last day only)",
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        default=["a8b6fbc", "5d4863b"],
        help="git revisions whose loan book to compare (a8b6fbc: day by day; 5d4863b: set-wise, reading history)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--scratch", type=Path, help="keep the setup (drops, lake) in this folder and reuse it when run again"
    )
    return parser.parse_args(argv)


def set_up_lake(
    spark: SparkResource,
    lake: IcebergLakeResource,
    landing: Path,
    days: list[date],
    simulation: SimulationConfig,
    monitor: Monitor,
) -> dict[str, float]:
    """Land the days' drops, materialize raw and the day's core assets over all of them and the book (and ledger)
    over all but the last; returns each run's wall seconds."""
    simulate(simulation, days[0], days[-1], LandingZone.local(landing))
    raw_asset, day_assets, book_assets = pipeline_assets()
    resources, instance = resources_for(spark, lake, landing), dg.DagsterInstance.ephemeral()
    whole, chained = (days[0].isoformat(), days[-1].isoformat()), (days[0].isoformat(), days[-2].isoformat())
    core = run_assets("setup: raw and core", [raw_asset, *day_assets], resources, instance, monitor, key_range=whole)
    book = run_assets("setup: book", book_assets, resources, instance, monitor, key_range=chained)
    if not (core.success and book.success):
        raise SystemExit("the setup runs failed")
    return {"core": core.wall_s, "book": book.wall_s}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ways = [Way(THIS, LOAN_DAILY_STATUS, keeps_closed_loans=False), *(way_at(r) for r in args.baselines)]
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", module="pyspark.sql.udf")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="loan_book_bench_"))
    scratch.mkdir(parents=True, exist_ok=True)
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
        lake = IcebergLakeResource(data_dir=str(scratch / "lake"))
        set_up = scratch / f"set_up_{args.scale:g}_{args.days}.json"
        if set_up.exists():
            print(f"reusing the setup in {scratch}", file=sys.stderr, flush=True)
            setup = json.loads(set_up.read_text())
        else:
            simulation = SimulationConfig(seed=1, start=first, scale=args.scale)
            setup = set_up_lake(spark, lake, scratch / "landing", days, simulation, monitor)
            set_up.write_text(json.dumps(setup))
        names = [way.name for way in ways]
        shapes = [
            Shape("last day", days[-1:], names),
            *(Shape(f"range of {n} days", days[-n:], names) for n in args.range_days),
        ]
        for shape in shapes:
            measure(shape, ways, book_inputs(session, lake, shape.days, ways), args.repeats)
        state = carried_state_bytes(session, lake, days[-2], scratch)
        env = environment(["pyspark", "pyiceberg"], f"Spark local[*], driver memory {args.driver_memory}")
    finally:
        monitor.stop()
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    text = section(shapes, setup, state, args, env)
    print(text)
    if not args.no_write:
        update_section(args.output, text, MARKER_START, MARKER_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
