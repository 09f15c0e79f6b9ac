"""Benchmark: the big day. One business day of a large lender through raw, core (the loan book and the ledger
included) and reporting, as Dagster runs, from lakes holding different lengths of history.

    .venv/bin/python -m benchmarks.lending_day [--scale 130] [--date 2025-04-15] [--history-days 100 500]

1. The day's drop is simulated into a landing folder (timed apart: not pipeline time).
2. The book of the business day before (core/loan_daily_status) is derived once from the simulator's state
   (assets/lending/world_book.py, tested equal to the book the platform chains from the drops): every loan open at
   the end of that day, with its installments and what was paid toward each. Timed apart.
3. Per history length N, a fresh lake gets that book as the previous day's partition and, for the N business days
   before the day, what the day's steps read across history (benchmarks/lake_history.py): core/loans and
   core/merchants to date (the events' reference audits, a loan's merchant as of its day), core/closed_loans to date
   (the reports), written 23 days per commit as a backfill would, then maintained as the daily schedule would.
4. Three runs of the day, each one partition in-process: raw (``raw_landing_drop``), core (every core asset, the
   book and ledger too), reporting. A step's time should not depend on N: only the day's drop and the open book.
   The first lake's day is run again after the others (its first runs were the session's warm-up) and reported.

Per step: wall seconds (Dagster's step events), CPU seconds of this process and its children (Spark's JVM and its
Python workers) over the step, rows from the materializations' ``dagster/row_count``. Writes the ``lending_day``
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import psutil
import pyarrow as pa
import pyiceberg
import pyspark
from pyspark.sql import SparkSession

from assets.lending.contract import business_days, previous_business_day
from assets.lending.landing import LandingZone, LandingZoneResource
from assets.lending.simulator import simulate
from assets.lending.tables import CORE_CLOSED_LOANS, CORE_LOAN_DAILY_STATUS, CORE_LOANS, CORE_MERCHANTS
from assets.lending.world import SimulationConfig
from batch_platform.lake import IcebergLakeResource
from batch_platform.lake.maintenance import MaintenanceConfig, maintain_table
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource
from benchmarks.lake_history import (
    SEED,
    WORLD_START,
    OpeningBook,
    Seeded,
    opening_book,
    seed_book,
    seed_closed_loans,
    seed_history,
)
from benchmarks.markdown import update_section
from benchmarks.runs import Monitor, RunTiming, StepTiming, load_average, run_assets, table, text_table

MARKER_START = "<!-- lending_day:start -->"
MARKER_END = "<!-- lending_day:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BENCHMARK_SCALE = 130.0  # about 1.2 million payments on the benchmark day
BENCHMARK_DATE = date(2025, 4, 15)  # a Tuesday: one calendar day of events, every loan term in its steady state
PII_KEY = "benchmark-only-key-" + "0123456789abcdef" * 2
BOOK_ASSETS = ("core/loan_daily_status", "core/closed_loans", "core/ledger_entries")  # those reading the book
BOOK = "core/loan_daily_status"
# The book's rows per second a day took before it was computed set-wise from the open book (docs/benchmarks.md).
BOOK_ROWS_PER_S_BEFORE = 49_362
DAYS_PER_COMMIT = 23  # a backfill chunk: how the history would have been written
HISTORY_TABLES = (CORE_LOANS, CORE_MERCHANTS, CORE_CLOSED_LOANS, CORE_LOAN_DAILY_STATUS)


# -- the day's drop ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    business_date: date
    rows: dict[str, int]
    wall_s: float
    cpu_s: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def generate(config: SimulationConfig, business_date: date, landing_root: Path) -> Generated:
    started, started_cpu = time.perf_counter(), time.process_time()
    (drop,) = simulate(config, business_date, business_date, LandingZone.local(landing_root))
    return Generated(
        business_date,
        {f.dataset: f.rows for f in drop.files},
        time.perf_counter() - started,
        time.process_time() - started_cpu,
    )


# -- the assets and their resources --------------------------------------------------------------------------------


def pipeline_assets() -> tuple[dg.AssetsDefinition, list[dg.AssetsDefinition], list[dg.AssetsDefinition]]:
    """(raw, the day's core assets, the day-chained pair); imported here, after the beta warnings are silenced."""
    from assets.lending.core import core_assets
    from assets.lending.raw import raw_landing_drop

    def key(a: dg.AssetsDefinition) -> str:
        return a.key.to_user_string()

    day = [a for a in core_assets if key(a) not in BOOK_ASSETS]
    book = sorted((a for a in core_assets if key(a) in BOOK_ASSETS), key=lambda a: BOOK_ASSETS.index(key(a)))
    return raw_landing_drop, day, book


def reporting_assets() -> list[dg.AssetsDefinition]:
    from assets.lending.reporting import reporting_assets

    return [a for a in reporting_assets if isinstance(a, dg.AssetsDefinition)]


def resources_for(spark: SparkResource, lake: IcebergLakeResource, landing: Path) -> dict[str, object]:
    return {
        "lake": lake,
        "spark": spark,
        "landing": LandingZoneResource(uri=str(landing)),
        "pii": PiiTokenizer(key=PII_KEY),
    }


# -- one lake, one day ---------------------------------------------------------------------------------------------


@dataclass
class HistoryRun:
    """The day's three runs on a lake holding ``seeded.business_days`` days of history."""

    seeded: Seeded
    closed_loans: int
    book_rows: int
    setup_s: float
    runs: list[RunTiming]
    lake: IcebergLakeResource | None = None
    instance: dg.DagsterInstance | None = None

    @property
    def days(self) -> int:
        return self.seeded.business_days

    @property
    def success(self) -> bool:
        return all(run.success for run in self.runs)

    @property
    def wall_s(self) -> float:
        return sum(run.wall_s for run in self.runs)

    def step(self, name: str) -> StepTiming | None:
        return next((s for run in self.runs for s in run.steps if _step_name(s) == name), None)


def run_history(
    spark: SparkResource,
    scratch: Path,
    monitor: Monitor,
    config: SimulationConfig,
    business_date: date,
    book: OpeningBook,
    days: int,
) -> HistoryRun:
    landing = scratch / "landing"
    lake = IcebergLakeResource(data_dir=str(scratch / f"lake-{days}"))
    print(f"history of {days} business days", file=sys.stderr, flush=True)
    with monitor.measuring(f"history {days}"):
        started = time.perf_counter()
        seeded = seed_history(lake, landing, config, business_date, True, days=days, days_per_commit=DAYS_PER_COMMIT)
        history = list(business_days(seeded.first_day, previous_business_day(business_date)))
        closed = seed_closed_loans(lake, book, history, DAYS_PER_COMMIT)
        instance = dg.DagsterInstance.ephemeral()  # the day's runs use it too: it knows the book's previous day
        book_rows = seed_book(lake, book, instance)
        for lake_table in HISTORY_TABLES:
            maintain_table(lake, lake_table, MaintenanceConfig(), instance)
        setup_s = time.perf_counter() - started
    result = HistoryRun(seeded, closed, book_rows, setup_s, [], lake, instance)
    result.runs = day_runs(spark, lake, instance, monitor, scratch / "landing", business_date, days)
    return result


def day_runs(
    spark: SparkResource,
    lake: IcebergLakeResource,
    instance: dg.DagsterInstance,
    monitor: Monitor,
    landing: Path,
    business_date: date,
    days: int,
) -> list[RunTiming]:
    """The day's three runs on a seeded lake (again: each replaces the partitions it wrote before)."""
    raw_asset, day_assets, book_assets = pipeline_assets()  # the day's assets include the book's input barrier
    resources = resources_for(spark, lake, landing)
    key = business_date.isoformat()
    return [
        run_assets(f"raw {days}", [raw_asset], resources, instance, monitor, partition_key=key),
        run_assets(f"core {days}", [*day_assets, *book_assets], resources, instance, monitor, partition_key=key),
        run_assets(f"reporting {days}", reporting_assets(), resources, instance, monitor, partition_key=key),
    ]


# -- reporting ---------------------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _rate(rows: int, seconds: float | None) -> str:
    return "n/a" if not seconds else f"{rows / seconds:,.0f}"


def _step_name(step: StepTiming) -> str:
    if len(step.rows) == 1:
        return next(iter(step.rows))
    return step.step.replace("__", "/")


def _seconds(step: StepTiming | None) -> float | None:
    return None if step is None else step.seconds


def _ratio(deep: float | None, shallow: float | None) -> str:
    return "n/a" if not deep or not shallow else f"{deep / shallow:.2f}"


def step_rows(results: Sequence[HistoryRun]) -> list[list[str]]:
    """Per step: rows, and per history its seconds; the deepest against the shallowest; its rows/s and CPU s."""
    shallow, deep = results[0], results[-1]
    lines: list[list[str]] = []
    for run_index, run in enumerate(deep.runs):
        for step in run.steps:
            name = _step_name(step)
            other = shallow.step(name)
            status = step.status + (f" ({', '.join(step.failed_checks)} failed)" if step.failed_checks else "")
            if other is not None and other.status != "ok" and step.status == "ok":
                status = f"{other.status} with {shallow.days} days"
            lines.append(
                [
                    name + (f" ({len(step.rows)} tables)" if len(step.rows) > 1 else ""),
                    f"{step.total_rows:,}",
                    *[_n(_seconds(r.step(name)), 1) for r in results],
                    _ratio(step.seconds, other.seconds if other else None),
                    _rate(step.total_rows, step.seconds),
                    _n(step.cpu_s),
                    status,
                ]
            )
        label = run.label.split(" ")[0]
        seconds = [r.runs[run_index].wall_s for r in results]
        lines.append(
            [
                f"**{label} run** (wall)",
                f"{sum(s.total_rows for s in run.steps):,}",
                *[_n(s, 1) for s in seconds],
                _ratio(seconds[-1], seconds[0]),
                "",
                _n(sum(s.cpu_s or 0.0 for s in run.steps)),
                "ok" if all(r.runs[run_index].success for r in results) else "FAILED",
            ]
        )
    totals = [r.wall_s for r in results]
    status = "ok" if all(r.success for r in results) else "FAILED"
    ratio = _ratio(totals[-1], totals[0])
    lines.append(["**the day** (three runs)", "", *[f"**{_n(t, 1)}**" for t in totals], f"**{ratio}**", "", "", status])
    return lines


def step_header(results: Sequence[HistoryRun]) -> list[str]:
    return [
        "step",
        "rows",
        *[f"s, {r.days} days" for r in results],
        f"{results[-1].days} / {results[0].days}",
        f"rows/s, {results[-1].days} days",
        "CPU s",
        "status",
    ]


def breakdown_rows(result: HistoryRun) -> list[list[str]]:
    """Where each step's time went, cut at the events it reported (audits are evaluated in order)."""
    lines = []
    for run in result.runs:
        for step in run.steps:
            segments = step.segments()
            if not segments:
                continue
            cpu = step.segment_cpu_s or [None] * len(segments)
            merged: list[tuple[str, float, float | None]] = []
            for (label, seconds), cpu_s in zip(segments, cpu, strict=True):
                # The raw step's manifest checks arrive together at the end: one entry for all of them.
                if merged and label == merged[-1][0]:
                    previous = merged[-1]
                    both = None if previous[2] is None or cpu_s is None else previous[2] + cpu_s
                    merged[-1] = (label, previous[1] + seconds, both)
                else:
                    merged.append((label, seconds, cpu_s))
            if merged and merged[0][0].startswith("audit "):
                merged[0] = (f"stage + {merged[0][0]}", *merged[0][1:])
            text = "; ".join(
                f"{label} {seconds:.1f}" + (f" ({cpu_s:.0f} CPU)" if cpu_s is not None and seconds >= 1 else "")
                for label, seconds, cpu_s in merged
            )
            lines.append([_step_name(step), _n(step.seconds, 1), text])
    return lines


def headline(generated: Generated, results: Sequence[HistoryRun]) -> str:
    deep, shallow = results[-1], results[0]
    book_step = deep.step(BOOK)
    book_rate = (book_step.total_rows / book_step.seconds) if book_step and book_step.seconds else None
    parts = [
        f"**{generated.rows.get('payments', 0):,} payments on a book of {deep.book_rows:,} loans, landing to "
        f"reporting in {deep.wall_s:,.0f} s with {deep.days} business days of history and {shallow.wall_s:,.0f} s "
        f"with {shallow.days} ({deep.wall_s / shallow.wall_s:.2f}x)**" + ("." if deep.success else " (FAILED)."),
    ]
    if book_step is not None and book_rate is not None:
        parts.append(
            f"The book step wrote {book_step.total_rows:,} rows in {book_step.seconds:.1f} s: **{book_rate:,.0f} book "
            f"rows/s**, {book_rate / BOOK_ROWS_PER_S_BEFORE:.1f}x the {BOOK_ROWS_PER_S_BEFORE:,} of the day-by-day "
            'book that re-read the history ("The day-chained pair" below this section, scale 26).'
        )
    return " ".join(parts)


def environment(spark: SparkResource) -> dict[str, str]:
    session = spark.session
    conf = session.sparkContext.getConf()
    jvm = session.sparkContext._jvm
    assert jvm is not None
    heap_gib = jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**30
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.system()}",
        "versions": f"Python {platform.python_version()}, dagster {dg.__version__}, pyspark {pyspark.__version__}, "
        f"pyiceberg {pyiceberg.__version__}, pyarrow {pa.__version__}, "
        f"Java {jvm.java.lang.System.getProperty('java.version')}",
        "spark": f"master {conf.get('spark.master')}, default parallelism {session.sparkContext.defaultParallelism}, "
        f"driver memory {conf.get('spark.driver.memory', '1g')} (max heap {heap_gib:.1f} GiB), shuffle partitions "
        f"{session.conf.get('spark.sql.shuffle.partitions')}, AQE {session.conf.get('spark.sql.adaptive.enabled')}",
        "catalog": "SQLite catalog and file warehouse in a temporary folder; ephemeral Dagster instance, in-process "
        "executor (steps run one after another)",
    }


def memory_lines(monitor: Monitor, results: Sequence[HistoryRun]) -> list[str]:
    def peak(table_: dict[str, float], phases: list[str]) -> str:
        value = monitor.peak(table_, phases)
        return "n/a" if value is None else f"{value:,.0f}"

    runs = [run.label for r in results for run in r.runs]
    return [
        f"- Peak RSS of the Python process: opening book {peak(monitor.python_peak, ['opening book'])} MiB (with "
        f"its workers' results in flight), runs {peak(monitor.python_peak, runs)} MiB; of the Spark JVM (driver and "
        f"executors in local mode): runs {peak(monitor.jvm_peak, runs)} MiB.",
    ]


def markdown_section(
    generated: Generated,
    book: OpeningBook,
    results: Sequence[HistoryRun],
    monitor: Monitor,
    env: dict[str, str],
    command: str,
    scale: float,
    load: tuple[float, float],
) -> str:
    deep = results[-1]
    history = "; ".join(
        f"{r.days} days (from {r.seeded.first_day}): core/loans {r.seeded.loans:,} rows ({r.seeded.imported_loans:,} "
        f"of them imported in the first partition), core/merchants {r.seeded.merchants:,}, core/closed_loans "
        f"{r.closed_loans:,}, written and maintained in {r.setup_s:,.0f} s"
        for r in results
    )
    lines = [
        MARKER_START,
        "## The big day: one business day at scale 130, landing to reporting, against the lake's age",
        "",
        "Generated by `benchmarks/lending_day.py`; re-running it replaces this section (between the markers).",
        "",
        f"Reproduce: `{command}`",
        "",
        headline(generated, results),
        "",
        f"The day: business date {generated.business_date} of a lender started {WORLD_START}, simulator scale "
        f"{scale:g} (seed {SEED}): "
        + ", ".join(f"{name} {rows:,}" for name, rows in generated.rows.items())
        + f" (generated in {generated.wall_s:.0f} s, not counted).",
        "",
        f"The book it starts from: core/loan_daily_status of {book.business_date}, derived from the simulator's "
        f"state (assets/lending/world_book.py, which tests/test_world_book.py proves equal to the book the platform "
        f"chains from the drops): {book.rows:,} rows, {book.open_loans:,} open loans carrying {book.installments:,} "
        f"installments, computed and written as Parquet in {book.wall_s:,.0f} s (not counted).",
        "",
        f"The lakes: {history}. Only the loan ids the day's events name and the merchants are real; the other loans "
        "are filler with real-looking ids, and the closed loans are the book's own final rows of its day under new "
        "ids, the same rows every day. 23 days per commit (a backfill's chunk), then the maintenance job's "
        "compaction, manifest rewrite and expiry. Raw tables and the other core tables hold only the day: the day's "
        "steps read only their own partition of them.",
        "",
        "What runs: three runs of the one partition, on an ephemeral Dagster instance with the in-process executor "
        "(steps one after another, one Spark session `local[*]`): raw (`raw_landing_drop`), core (every core asset, "
        "the book and the ledger included), reporting (the portfolio, the vintage curves and the merchant spec). "
        "A step's seconds are from its STEP_START to its STEP_SUCCESS/FAILURE event; CPU s are those of this "
        "process and its children over the step (with the deeper history); rows are those committed. One run per "
        "history; the first history's day is run again after the others and that second run is shown, so that the "
        "session's warm-up (its first Spark work) is charged to no history. Expect 10-20% spread between runs on a "
        "shared machine.",
        "",
        table(step_header(results), step_rows(results), "l" + "r" * (len(results) + 4) + "l"),
        "",
        f"Where each step's time went with {deep.days} days of history, in seconds, cut at the events the step "
        "reported (the first cut covers reading the inputs, the transform, staging the files and the first audit; "
        "each audit after it is its own cut; publish is the commit):",
        "",
        table(["step", "seconds", "parts"], breakdown_rows(deep), "lrl"),
        "",
        *memory_lines(monitor, results),
        f"- 1-minute load average: {load[0]:.1f} at the start, {load[1]:.1f} at the end, on {os.cpu_count()} CPUs.",
        "",
        "Environment:",
        "",
        *[f"- {k}: {v}" for k, v in env.items()],
        MARKER_END,
    ]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.lending_day",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", type=float, default=BENCHMARK_SCALE, help="simulator scale of the day")
    parser.add_argument("--date", type=date.fromisoformat, default=BENCHMARK_DATE, help="the business day (ISO)")
    parser.add_argument(
        "--history-days", type=int, nargs="+", default=[100, 500], help="business days of history, one lake each"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes deriving the book")
    parser.add_argument("--driver-memory", default="8g", help="spark.driver.memory (local mode: the whole Spark)")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--scratch", type=Path, help="work here and keep it (a drop already there is reused)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write the section to")
    parser.add_argument("--no-write", action="store_true", help="print the tables only; leave the markdown alone")
    args = parser.parse_args(argv)
    args.history_days = sorted(set(args.history_days))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Beta parameters (backfill_policy, pools) are deliberate; their warnings would drown the output.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    # PySpark warns on every PII UDF that without pandas it cannot use Arrow; once is enough.
    warnings.filterwarnings("ignore", module="pyspark.sql.udf")
    command = " ".join([".venv/bin/python -m benchmarks.lending_day", *(argv if argv is not None else sys.argv[1:])])
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="lending_day_bench_"))
    config = SimulationConfig(seed=SEED, start=WORLD_START, scale=args.scale)
    monitor = Monitor()
    load_start = load_average()
    monitor.start()
    spark: SparkResource | None = None
    try:
        print(f"generating {args.date} at scale {args.scale:g}", file=sys.stderr, flush=True)
        with monitor.measuring("generate"):
            generated = generate(config, args.date, scratch / "landing")
        print(f"deriving the book of the day before with {args.workers} workers", file=sys.stderr, flush=True)
        with monitor.measuring("opening book"):
            book = opening_book(config, args.date, scratch / "opening-book", args.workers)
        spark = SparkResource(
            spark_config={
                "spark.master": "local[*]",
                "spark.app.name": "lending_day_benchmark",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.driver.memory": args.driver_memory,
                "spark.sql.shuffle.partitions": str(args.shuffle_partitions),
                "spark.sql.adaptive.enabled": "true",
                # Shuffle files, spills and checkpoints inside the scratch folder, so that they go with it.
                "spark.local.dir": str(scratch / "spark"),
            }
        )
        with monitor.measuring("spark start"):
            # Started here, not inside the first step: a session a step starts gets that step's compute profile.
            spark.session.sparkContext.setLogLevel("ERROR")
        results = [run_history(spark, scratch, monitor, config, args.date, book, days) for days in args.history_days]
        if len(results) > 1:
            # The first lake's runs were the session's first Spark work (class loading, code generation): run its
            # day again, after the others, so that no history is charged the warm-up.
            first = results[0]
            assert first.lake is not None and first.instance is not None
            first.runs = day_runs(
                spark, first.lake, first.instance, monitor, scratch / "landing", args.date, first.days
            )
        env = environment(spark)
    finally:
        monitor.stop()
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()  # before its local dir goes
        for lake_dir in scratch.glob("lake-*"):
            shutil.rmtree(lake_dir, ignore_errors=True)  # a deep lake is tens of GB
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    load_end = load_average()
    print(text_table(step_header(results), [[c.replace("**", "") for c in r] for r in step_rows(results)]))
    print()
    print(text_table(["step", "seconds", "parts"], breakdown_rows(results[-1]), "lrl"))
    print()
    print(headline(generated, results).replace("**", ""))
    if not args.no_write:
        section = markdown_section(generated, book, results, monitor, env, command, args.scale, (load_start, load_end))
        update_section(args.output, section, MARKER_START, MARKER_END)
        print(f"\nwrote the lending_day section of {args.output}", file=sys.stderr)
    return 0 if all(r.success for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
