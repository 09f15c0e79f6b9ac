"""Benchmark: one business day of over a million payments from landing through raw and core, as Dagster runs.

    .venv/bin/python -m benchmarks.lending_day [--scale 130] [--date 2025-04-15] [--book-scale 26 --book-days 35]

1. The day's drop is simulated into a temporary landing folder (timed apart: not pipeline time).
2. The lake gets the history the day's core steps read: ``core/loans`` and ``core/merchants`` for every business day
   since the lender's start, one commit per day as the daily runs make them (timed apart). Without it the
   ``references_a_loan`` audits fail: the day's payments pay loans originated up to two years earlier.
3. Run 1: ``raw_landing_drop`` for the day. Run 2: every core asset that needs only that day (all of ``core_assets``
   but ``core/loan_daily_status`` and ``core/ledger_entries``, which carry balances from the previous business day).
4. Optionally (``--book-days`` > 0) the day-chained pair is measured on a smaller lender from its first day: one
   range run of raw and core over the first days, then the pair for all days but the last, then the last day alone.

Per step: wall seconds (Dagster's step events), CPU seconds of this process and its children (Spark's JVM and its
Python workers) over the step, rows from the materializations' ``dagster/row_count``. The Python and JVM peak RSS
are sampled every 100 ms. Writes the ``lending_day`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.util
import itertools
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import psutil
import pyarrow as pa
import pyiceberg
import pyspark
from pyspark.sql import SparkSession

from assets.lending.contract import CATEGORIES, LENDING_START, REGIONS, RISK_BANDS, business_days, previous_business_day
from assets.lending.landing import LandingZone, LandingZoneResource, read_drop
from assets.lending.schedule import TERMS_MONTHS, due_dates, epoch_day
from assets.lending.simulator import drop_window, simulate
from assets.lending.tables import CORE_LOANS, CORE_MERCHANTS
from assets.lending.world import ID_BLOCK, SimulationConfig, World
from batch_platform.lake import IcebergLakeResource, Lineage
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource
from benchmarks.markdown import update_section

MARKER_START = "<!-- lending_day:start -->"
MARKER_END = "<!-- lending_day:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
WORLD_START = date.fromisoformat(LENDING_START)
BENCHMARK_SCALE = 130.0  # about 1.2 million payments on the benchmark day
BENCHMARK_DATE = date(2025, 4, 15)  # a Tuesday: one calendar day of events, every loan term in its steady state
SEED = 1
PII_KEY = "benchmark-only-key-" + "0123456789abcdef" * 2
SAMPLE_INTERVAL_S = 0.1
BOOK_ASSETS = ("core/loan_daily_status", "core/closed_loans", "core/ledger_entries")  # those reading the book
EVENT_DATASETS = ("payments", "refunds", "charge_offs", "recoveries")  # the datasets whose rows name a loan
# Below this seq every id of a day is an application of that day (the simulator's ids are yyyymmdd * ID_BLOCK + seq).
FILLER_SEQ_LIMIT = ID_BLOCK // 2
HISTORY_KINDS = {
    "full": "as many loans per day as the simulator originated before the day",
    "referenced": "only the loans the day's events reference",
}
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# -- monitoring --------------------------------------------------------------------------------------------------


def _mib(process: psutil.Process | None) -> float | None:
    if process is None:
        return None
    try:
        return float(process.memory_info().rss) / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class Monitor:
    """Samples, every 100 ms in a thread: peak RSS of this process and of the Spark JVM (per phase), and the CPU
    seconds of the whole process tree, so that any interval (a Dagster step) can be charged its CPU.

    CPU seconds are the steadier number on a shared machine: other work stretches wall time far more than the CPU
    time the pipeline itself burns.
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._me = psutil.Process()
        self._jvm: psutil.Process | None = None
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="benchmark-monitor", daemon=True)
        self._lock = threading.Lock()
        self.phase = "setup"
        self.python_peak: dict[str, float] = {}
        self.jvm_peak: dict[str, float] = {}
        self._times: list[float] = []
        self._cpu: list[float] = []
        self._children: list[psutil.Process] = []
        self._children_at = 0.0

    def children(self) -> list[psutil.Process]:
        """This process's descendants, listed at most once a second: listing reads every process of the machine,
        which every 100 ms would cost this process a few percent of a core (and the GIL)."""
        now = time.monotonic()
        if now - self._children_at > 1.0:
            self._children, self._children_at = self._me.children(recursive=True), now
        return self._children

    def jvm(self) -> psutil.Process | None:
        """The Spark JVM: in local mode PySpark starts it as a child of this process."""
        if self._jvm is not None and self._jvm.is_running():
            return self._jvm
        for child in self.children():
            try:
                if child.name() == "java":
                    self._jvm = child
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return None

    def _tree_cpu(self) -> float:
        own = self._me.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system  # children_*: exited ones
        for child in self.children():
            try:
                times = child.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += times.user + times.system
        return float(total)

    def sample(self) -> None:
        now, cpu = time.time(), self._tree_cpu()
        python, jvm = _mib(self._me), _mib(self.jvm())
        with self._lock:
            self._times.append(now)
            self._cpu.append(cpu)
            if python is not None:
                self.python_peak[self.phase] = max(self.python_peak.get(self.phase, 0.0), python)
            if jvm is not None:
                self.jvm_peak[self.phase] = max(self.jvm_peak.get(self.phase, 0.0), jvm)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @contextmanager
    def measuring(self, phase: str) -> Iterator[None]:
        self.sample()  # closes the previous phase's peaks at its end
        self.phase = phase
        self.sample()
        try:
            yield
        finally:
            self.sample()

    def cpu_at(self, moment: float) -> float | None:
        """CPU seconds of the process tree at a moment, interpolated between the two samples around it."""
        with self._lock:
            times, cpu = list(self._times), list(self._cpu)
        if not times or moment < times[0] or moment > times[-1]:
            return None
        i = bisect.bisect_left(times, moment)
        if times[i] == moment or i == 0:
            return cpu[i]
        t0, t1 = times[i - 1], times[i]
        return cpu[i - 1] + (cpu[i] - cpu[i - 1]) * (moment - t0) / (t1 - t0)

    def cpu_between(self, start: float, end: float) -> float | None:
        first, last = self.cpu_at(start), self.cpu_at(end)
        return None if first is None or last is None else last - first

    def peak(self, table: dict[str, float], phases: Sequence[str] | None = None) -> float | None:
        values = [v for k, v in table.items() if phases is None or k in phases]
        return max(values) if values else None


def load_average() -> float:
    return os.getloadavg()[0]


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


# -- the history the day's core steps read -----------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    business_days: int
    loans: int
    referenced_loans: int
    merchants: int
    commits: int
    wall_s: float


def referenced_loans(tables: dict[str, pa.Table], window_start: date) -> dict[int, np.ndarray]:
    """Loan ids the drop's events name, originated before its window, grouped by origination day (yyyymmdd)."""
    ids = np.unique(np.concatenate([tables[d]["loan_id"].to_numpy() for d in EVENT_DATASETS]))
    keys = ids // ID_BLOCK
    start_key = window_start.year * 10_000 + window_start.month * 100 + window_start.day
    ids, keys = ids[keys < start_key], keys[keys < start_key]
    return {int(k): ids[keys == k] for k in np.unique(keys)}


def _day_key(day: date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


def _money(values: np.ndarray) -> pa.Array:
    # Whole currency units: int32 casts to decimal(18, 2) exactly.
    return pa.array(values.astype(np.int32)).cast(pa.decimal128(18, 2))


def _dates(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32), pa.date32())


def history_loans(
    world: World,
    day: date,
    business_date: date,
    referenced: np.ndarray | None,
    approval: float,
    full: bool,
    merchant_category: np.ndarray,
    rng: np.random.Generator,
) -> pa.Table:
    """core/loans rows for the loans originated on ``day``: the referenced ids, plus, if ``full``, as many more
    ids of that day as the simulator would have approved. Only the ids are real; the other columns are plausible
    random values (the day's steps read only ``loan_id`` of the history)."""
    ids = referenced if referenced is not None else np.empty(0, np.int64)
    if full:
        applications = world.counts(epoch_day(day))[0]
        if applications > FILLER_SEQ_LIMIT:
            raise ValueError(f"{applications} applications on {day}: over the filler id range; lower the scale")
        base = _day_key(day) * ID_BLOCK
        free = np.setdiff1d(np.arange(applications, dtype=np.int64), ids - base)
        ids = np.sort(np.concatenate([ids, base + free[: max(0, round(applications * approval) - len(ids))]]))
    n = len(ids)
    origination = epoch_day(day)
    term = np.array(TERMS_MONTHS, np.int64)[rng.integers(0, len(TERMS_MONTHS), n)]
    apr = np.where(rng.random(n) < 0.1, 0, rng.integers(799, 3600, n))
    principal = rng.integers(100, 6_000, n)
    merchant = rng.integers(1, len(merchant_category) + 1, n)
    due = due_dates(origination)
    return pa.table(
        {
            "business_date": _dates(np.full(n, epoch_day(business_date))),
            "loan_id": ids,
            "application_id": ids,
            "customer_id": rng.integers(_day_key(WORLD_START) * ID_BLOCK, _day_key(day) * ID_BLOCK + 1, n),
            "merchant_id": merchant,
            "merchant_category": pa.array(CATEGORIES).take(pa.array(merchant_category[merchant - 1])),
            "origination_date": _dates(np.full(n, origination)),
            "vintage_month": _dates(np.full(n, epoch_day(day.replace(day=1)))),
            "principal": _money(principal),
            "term_months": term.astype(np.int32),
            "apr_bps": apr.astype(np.int32),
            "is_zero_apr_promo": apr == 0,
            "risk_band": pa.array(RISK_BANDS).take(pa.array(rng.integers(0, len(RISK_BANDS), n))),
            "installment": _money(principal // term + 1),
            "total_interest": _money(principal * apr * term // 240_000),
            "first_due_date": _dates(np.full(n, due[1])),
            "maturity_date": _dates(due[term]),
        }
    )


def history_merchants(world: World, first: date, last: date, business_date: date, category: np.ndarray) -> pa.Table:
    """core/merchants rows of the merchants onboarded in [first, last] (real ids and categories, made-up names)."""
    ids: list[int] = []
    onboarded: list[int] = []
    for offset in range((last - first).days + 1):
        day = epoch_day(first) + offset
        low = 1 if day == world.start_day else world.merchants_as_of(day - 1) + 1
        new = range(low, world.merchants_as_of(day) + 1)
        ids.extend(new)
        onboarded.extend([day] * len(new))
    id_array = np.array(ids, np.int64)
    return pa.table(
        {
            "business_date": _dates(np.full(len(ids), epoch_day(business_date))),
            "merchant_id": id_array,
            "onboarded_date": _dates(np.array(onboarded, np.int64)),
            "merchant_name": pa.array([f"Merchant {i}" for i in ids], pa.string()),
            "category": pa.array(CATEGORIES).take(pa.array(category[id_array - 1])),
            "region": pa.array(REGIONS).take(pa.array(id_array % len(REGIONS))),
            "state": pa.nulls(len(ids), pa.string()),
            "city": pa.nulls(len(ids), pa.string()),
        }
    )


def seed_history(
    lake: IcebergLakeResource, landing: Path, config: SimulationConfig, business_date: date, full: bool
) -> Seeded:
    """Write core/loans and core/merchants for every business day before ``business_date``, one commit per table
    and day as the daily runs would (the planning of a history read scales with those commits' manifests)."""
    started = time.perf_counter()
    world = World(config)
    window_start = drop_window(config, business_date)[0]
    drop = read_drop(LandingZone.local(landing), business_date)
    referenced = referenced_loans(drop, window_start)
    approval = drop["loans"].num_rows / max(1, drop["applications"].num_rows)
    category = world.merchant_attributes(world.merchants_as_of(epoch_day(business_date)))["category"]
    rng = np.random.default_rng(SEED)
    days = list(business_days(config.start, previous_business_day(business_date)))
    loans = merchants = commits = 0
    for number, day in enumerate(days, 1):
        first, last = drop_window(config, day)
        key = day.isoformat()
        lineage = Lineage(run_id="benchmark-history", asset_key="", partition_keys=(key,))
        parts = [
            history_loans(
                world,
                first + timedelta(days=i),
                day,
                referenced.get(_day_key(first + timedelta(days=i))),
                approval,
                full,
                category,
                rng,
            )
            for i in range((last - first).days + 1)
        ]
        written = lake.write_arrow(CORE_LOANS, pa.concat_tables(parts), partition_keys=[key], lineage=lineage)
        loans += written.rows
        written = lake.write_arrow(
            CORE_MERCHANTS, history_merchants(world, first, last, day, category), partition_keys=[key], lineage=lineage
        )
        merchants += written.rows
        commits += 2
        if number % 100 == 0 or number == len(days):
            print(f"  history: {number}/{len(days)} business days, {loans:,} loans", file=sys.stderr, flush=True)
    return Seeded(
        len(days),
        loans,
        sum(len(v) for v in referenced.values()),
        merchants,
        commits,
        time.perf_counter() - started,
    )


# -- Dagster runs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """Something the step reported, and when: where one part of the step's time ends."""

    label: str
    at: float


@dataclass
class StepTiming:
    step: str
    status: str = "not run"
    start: float | None = None
    end: float | None = None
    rows: dict[str, int] = field(default_factory=dict)  # asset key -> rows committed
    marks: list[Mark] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None
    cpu_s: float | None = None
    segment_cpu_s: list[float | None] = field(default_factory=list)  # one per segments() entry
    # Seconds the step measured itself (write-audit-publish's metadata): wap/stage_seconds, wap/audit_seconds,
    # wap/commit_seconds, and "audit NAME" per audit.
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return None if self.start is None or self.end is None else self.end - self.start

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def segments(self) -> list[tuple[str, float]]:
        """The step's time cut at each mark: (what ended there, seconds since the previous mark)."""
        if self.start is None:
            return []
        out, previous = [], self.start
        for mark in self.marks:
            out.append((mark.label, mark.at - previous))
            previous = mark.at
        if self.end is not None and self.end - previous > 0.005:
            out.append(("rest of step", self.end - previous))
        return out


@dataclass
class RunTiming:
    label: str
    partitions: str
    success: bool
    wall_s: float
    steps: list[StepTiming]
    load_before: float
    load_after: float

    def step(self, asset: str) -> StepTiming | None:
        return next((s for s in self.steps if asset in s.rows or s.step == asset.replace("/", "__")), None)


def _value(metadata_value: Any) -> Any:
    return getattr(metadata_value, "value", metadata_value)


def step_timings(instance: dg.DagsterInstance, run_id: str, monitor: Monitor) -> list[StepTiming]:
    """Per step, from the run's event log: start, end, status, rows materialized and the marks in between."""
    steps: dict[str, StepTiming] = {}
    for record in instance.all_logs(run_id):
        if record.step_key is None:
            continue
        step = steps.setdefault(record.step_key, StepTiming(record.step_key))
        event = record.dagster_event
        if event is None:
            # The raw step logs its drop summary once the whole drop is verified and parsed.
            if "loaded/" in (record.user_message or ""):
                step.marks.append(Mark("verify + parse the drop", record.timestamp))
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            step.start, step.status = record.timestamp, "running"
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            step.end = record.timestamp
            step.status = "ok" if kind == dg.DagsterEventType.STEP_SUCCESS else "FAILED"
            if kind == dg.DagsterEventType.STEP_FAILURE:
                error = getattr(event.event_specific_data, "error", None)
                step.error = (getattr(error, "message", None) or str(error)).strip().splitlines()[0]
        elif kind == dg.DagsterEventType.STEP_SKIPPED:
            step.status = "skipped"
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
            asset = materialization.asset_key.to_user_string()
            step.rows[asset] = int(_value(materialization.metadata.get("dagster/row_count", 0)))
            published = "iceberg/audited_rows" in materialization.metadata
            step.phases.update(
                {k: float(_value(v)) for k, v in materialization.metadata.items() if k.startswith("wap/")}
            )
            step.marks.append(Mark("publish" if published else f"write {asset}", record.timestamp))
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            name = str(getattr(evaluation, "check_name", "check"))
            if not getattr(evaluation, "passed", True):
                step.failed_checks.append(name)
            audit_seconds = (getattr(evaluation, "metadata", None) or {}).get("audit_seconds")
            if audit_seconds is not None:
                step.phases[f"audit {name}"] = float(_value(audit_seconds))
            step.marks.append(Mark(f"audit {name}", record.timestamp))
    for step in steps.values():
        if step.start is not None and step.end is not None:
            step.cpu_s = monitor.cpu_between(step.start, step.end)
            cuts = [step.start, *(m.at for m in step.marks), step.end][: len(step.segments()) + 1]
            step.segment_cpu_s = [monitor.cpu_between(a, b) for a, b in itertools.pairwise(cuts)]
    return sorted(steps.values(), key=lambda s: s.start or float("inf"))


def run_assets(
    label: str,
    assets: Sequence[dg.AssetsDefinition],
    resources: dict[str, object],
    instance: dg.DagsterInstance,
    monitor: Monitor,
    *,
    partition_key: str | None = None,
    key_range: tuple[str, str] | None = None,
) -> RunTiming:
    tags = (
        {"dagster/asset_partition_range_start": key_range[0], "dagster/asset_partition_range_end": key_range[1]}
        if key_range
        else None
    )
    partitions = partition_key or (f"{key_range[0]}..{key_range[1]}" if key_range else "")
    print(f"{label}: {partitions}", file=sys.stderr, flush=True)
    load_before = load_average()
    with monitor.measuring(label):
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            resources=resources,
            instance=instance,
            partition_key=partition_key,
            tags=tags,
            run_config=QUIET_LOGS,
            raise_on_error=False,
        )
        wall = time.perf_counter() - started
    monitor.sample()
    steps = step_timings(instance, result.run_id, monitor)
    return RunTiming(label, partitions, result.success, wall, steps, load_before, load_average())


# -- the benchmark -----------------------------------------------------------------------------------------------


def pipeline_assets() -> tuple[dg.AssetsDefinition, list[dg.AssetsDefinition], list[dg.AssetsDefinition]]:
    """(raw, the day's core assets, the day-chained pair); imported here, after the beta warnings are silenced."""
    from assets.lending.core import core_assets
    from assets.lending.raw import raw_landing_drop

    def key(a: dg.AssetsDefinition) -> str:
        return a.key.to_user_string()

    day = [a for a in core_assets if key(a) not in BOOK_ASSETS]
    book = sorted((a for a in core_assets if key(a) in BOOK_ASSETS), key=lambda a: BOOK_ASSETS.index(key(a)))
    return raw_landing_drop, day, book


def resources_for(spark: SparkResource, lake: IcebergLakeResource, landing: Path) -> dict[str, object]:
    return {
        "lake": lake,
        "spark": spark,
        "landing": LandingZoneResource(uri=str(landing)),
        "pii": PiiTokenizer(key=PII_KEY),
    }


@dataclass
class DayResult:
    generated: Generated
    seeded: Seeded
    spark_start_s: float
    raw: RunTiming
    core: RunTiming
    history: str
    scale: float


@dataclass
class BookResult:
    scale: float
    days: list[date]
    generated_s: float
    landing_rows: dict[str, int]
    setup: RunTiming  # raw and the day's core assets over all days
    chained: RunTiming  # the pair over all days but the last
    last_day: RunTiming  # the pair for the last day alone


def run_day(
    spark: SparkResource,
    scratch: Path,
    monitor: Monitor,
    scale: float,
    business_date: date,
    full_history: bool,
) -> DayResult:
    raw_asset, day_assets, _ = pipeline_assets()
    config = SimulationConfig(seed=SEED, start=WORLD_START, scale=scale)
    landing = scratch / "landing"
    print(f"generating {business_date} at scale {scale:g}", file=sys.stderr, flush=True)
    with monitor.measuring("generate"):
        generated = generate(config, business_date, landing)
    lake = IcebergLakeResource(data_dir=str(scratch / "lake"))
    print("writing the history of core/loans and core/merchants", file=sys.stderr, flush=True)
    with monitor.measuring("history"):
        seeded = seed_history(lake, landing, config, business_date, full_history)
    with monitor.measuring("spark start"):
        started = time.perf_counter()
        # Started here, not inside the first step: a session a step starts gets that step's compute profile
        # ('small': 2g driver), which would override spark_config's driver memory.
        spark.session.sparkContext.setLogLevel("ERROR")
        spark_start = time.perf_counter() - started
    resources = resources_for(spark, lake, landing)
    instance = dg.DagsterInstance.ephemeral()
    key = business_date.isoformat()
    raw = run_assets("raw", [raw_asset], resources, instance, monitor, partition_key=key)
    core = run_assets("core", day_assets, resources, instance, monitor, partition_key=key)
    return DayResult(generated, seeded, spark_start, raw, core, "full" if full_history else "referenced", scale)


def run_book(spark: SparkResource, scratch: Path, monitor: Monitor, scale: float, days: int) -> BookResult:
    raw_asset, day_assets, book_assets = pipeline_assets()
    config = SimulationConfig(seed=SEED, start=WORLD_START, scale=scale)
    first = WORLD_START
    dates = list(business_days(first, first + timedelta(days=days * 2)))[:days]
    landing = scratch / "book-landing"
    print(f"book: generating {len(dates)} days at scale {scale:g}", file=sys.stderr, flush=True)
    with monitor.measuring("book generate"):
        started = time.perf_counter()
        drops = simulate(config, dates[0], dates[-1], LandingZone.local(landing))
        generated_s = time.perf_counter() - started
    rows: dict[str, int] = {}
    for drop in drops:
        for f in drop.files:
            rows[f.dataset] = rows.get(f.dataset, 0) + f.rows
    lake = IcebergLakeResource(data_dir=str(scratch / "book-lake"))
    resources = resources_for(spark, lake, landing)
    instance = dg.DagsterInstance.ephemeral()
    whole = (dates[0].isoformat(), dates[-1].isoformat())
    setup = run_assets("book setup", [raw_asset, *day_assets], resources, instance, monitor, key_range=whole)
    before_last = (dates[0].isoformat(), dates[-2].isoformat())
    chained = run_assets("book chained", book_assets, resources, instance, monitor, key_range=before_last)
    last = run_assets("book last day", book_assets, resources, instance, monitor, partition_key=dates[-1].isoformat())
    return BookResult(scale, dates, generated_s, rows, setup, chained, last)


# -- reporting ---------------------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _rate(rows: int, seconds: float | None) -> str:
    return "n/a" if not seconds else f"{rows / seconds:,.0f}"


def _step_name(step: StepTiming) -> str:
    if len(step.rows) == 1:
        return next(iter(step.rows))
    return step.step.replace("__", "/")


def day_rows(result: DayResult) -> list[list[str]]:
    """asset, rows, seconds, rows/s, CPU s, status: a line per step, the raw step's tables under it."""
    lines: list[list[str]] = []
    for run in (result.raw, result.core):
        for step in run.steps:
            status = step.status + (f" ({', '.join(step.failed_checks)} failed)" if step.failed_checks else "")
            lines.append(
                [
                    _step_name(step) + (f" ({len(step.rows)} tables)" if len(step.rows) > 1 else ""),
                    f"{step.total_rows:,}",
                    _n(step.seconds, 2),
                    _rate(step.total_rows, step.seconds),
                    _n(step.cpu_s),
                    status,
                ]
            )
            if len(step.rows) > 1:
                writes = dict(step.segments())
                for asset, rows in step.rows.items():
                    seconds = writes.get(f"write {asset}")
                    lines.append([f"  {asset} (write)", f"{rows:,}", _n(seconds, 2), _rate(rows, seconds), "", ""])
        steps_s = sum(s.seconds or 0.0 for s in run.steps)
        rows = sum(s.total_rows for s in run.steps)
        cpu = [s.cpu_s for s in run.steps if s.cpu_s is not None]
        lines.append(
            [
                f"**{run.label} run** ({len(run.steps)} step{'' if len(run.steps) == 1 else 's'}; "
                f"run wall {run.wall_s:.1f} s)",
                f"{rows:,}",
                _n(steps_s, 2),
                _rate(rows, steps_s),
                _n(sum(cpu)) if cpu else "n/a",
                "ok" if run.success else "FAILED",
            ]
        )
    return lines


def breakdown_rows(runs: Sequence[RunTiming]) -> list[list[str]]:
    """Where each step's time went, cut at the events it reported (audits are evaluated in order)."""
    lines = []
    for run in runs:
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
                merged[0] = (f"read + transform + write branch + {merged[0][0]}", *merged[0][1:])
            text = "; ".join(
                f"{label} {seconds:.2f}" + (f" ({cpu_s:.1f} CPU)" if cpu_s is not None and seconds >= 1 else "")
                for label, seconds, cpu_s in merged
            )
            lines.append([_step_name(step), _n(step.seconds, 2), text])
    return lines


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; ``align`` has an l or r per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)])


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    align = align or "l" + "r" * (len(header) - 1)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(line, widths, align, strict=True)).rstrip()
        for line in lines
    )


DAY_HEADER = ["asset", "rows", "seconds", "rows/s", "CPU s", "status"]


def book_rows(book: BookResult) -> list[list[str]]:
    lines = []
    n_chained = len(book.days) - 1
    for asset in BOOK_ASSETS:
        chained, last = book.chained.step(asset), book.last_day.step(asset)
        if chained is None or last is None:
            continue
        per_day = (chained.seconds or 0.0) / n_chained if chained.seconds else None
        lines.append(
            [
                asset,
                f"{chained.total_rows:,}",
                _n(chained.seconds, 1),
                _n(per_day, 2),
                f"{last.total_rows:,}",
                _n(last.seconds, 2),
                _rate(last.total_rows, last.seconds),
                _n(last.cpu_s),
                last.status if last.status != "ok" else chained.status,
            ]
        )
    return lines


BOOK_HEADER = [
    "asset",
    "rows, range run",
    "range run s",
    "s per day",
    "rows, last day",
    "last day s",
    "rows/s",
    "CPU s",
    "status",
]


def notes(result: DayResult) -> list[str]:
    """Observations computed from the measurements (so that they stay true when the benchmark is re-run)."""
    out = []
    core_steps = [s for s in result.core.steps if s.seconds]
    core_s = sum(s.seconds or 0.0 for s in core_steps)
    references = [
        (step, seconds)
        for step in core_steps
        for label, seconds in step.segments()
        if label == "audit references_a_loan"
    ]
    if references and core_s:
        spent = sum(s for _, s in references)
        out.append(
            f"The `references_a_loan` audits (each reads the loan ids of all of core/loans' history, "
            f"{result.seeded.loans:,} rows here) took {spent:.1f} s of the core run's {core_s:.1f} s of steps "
            f"({100 * spent / core_s:.0f}%): "
            + ", ".join(f"{_step_name(st)} {sec:.1f} s" for st, sec in references)
            + "."
        )
    first = min(core_steps, key=lambda s: s.start or 0.0, default=None)
    if first is not None:
        out.append(
            f"The first Spark step ({_step_name(first)}, {first.seconds:.1f} s) also pays the JVM's warm-up (class "
            "loading, JIT); the session itself was started before the runs."
        )
    publish = {_step_name(st): sec for st in core_steps for label, sec in st.segments() if label == "publish"}
    with_history = {k: v for k, v in publish.items() if k in (CORE_LOANS.asset_key.to_user_string(), "core/merchants")}
    fresh = sorted(v for k, v in publish.items() if k not in with_history)
    if with_history and fresh:
        out.append(
            "Commits get slower as a table's history grows (pyiceberg copies the whole table metadata, every "
            "snapshot, on each commit): publishing to "
            + " and ".join(f"{k} took {v:.2f} s" for k, v in with_history.items())
            + f" with {result.seeded.business_days} days of history, against a median {fresh[len(fresh) // 2]:.2f} s "
            "for the tables this run created; a write-audit-publish step commits four times (branch, write, publish, "
            "branch removal)."
        )
    customers = next((s for s in core_steps if "core/customers" in s.rows), None)
    if customers is not None and customers.seconds:
        out.append(
            f"core/customers tokenizes 5 PII fields per row with a Python UDF (HMAC-SHA256): "
            f"{customers.total_rows:,} rows in {customers.seconds:.1f} s "
            f"({customers.total_rows * 5 / customers.seconds:,.0f} tokens/s, including the write and audit)"
            + (
                "; pandas is not installed, so PySpark cannot use its Arrow-optimized UDFs and pickles row by row."
                if importlib.util.find_spec("pandas") is None
                else "."
            )
        )
    return out


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


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def memory_lines(monitor: Monitor) -> list[str]:
    phases = ["generate", "history", "raw", "core"]
    book = [p for p in monitor.python_peak if p.startswith("book")]
    lines = [
        f"- Peak RSS of the Python process (Dagster, pyiceberg, the Arrow raw step): generation "
        f"{_mb(monitor.peak(monitor.python_peak, ['generate']))} MiB, history "
        f"{_mb(monitor.peak(monitor.python_peak, ['history']))} MiB, raw run "
        f"{_mb(monitor.peak(monitor.python_peak, ['raw']))} MiB, core run "
        f"{_mb(monitor.peak(monitor.python_peak, ['core']))} MiB"
        + (f", book runs {_mb(monitor.peak(monitor.python_peak, book))} MiB." if book else "."),
        f"- Peak RSS of the Spark JVM (driver and, in local mode, the executors): core run "
        f"{_mb(monitor.peak(monitor.jvm_peak, ['core']))} MiB"
        + (f", book runs {_mb(monitor.peak(monitor.jvm_peak, book))} MiB" if book else "")
        + f"; overall {_mb(monitor.peak(monitor.jvm_peak, [*phases, *book, 'spark start']))} MiB.",
    ]
    return lines


def markdown_section(
    result: DayResult,
    book: BookResult | None,
    book_note: str,
    monitor: Monitor,
    env: dict[str, str],
    command: str,
    load: tuple[float, float],
) -> str:
    g, s = result.generated, result.seeded
    pipeline_s = result.raw.wall_s + result.core.wall_s
    landing_rows = g.total_rows
    payments = g.rows.get("payments", 0)
    headline = (
        f"**{payments:,} payments ({landing_rows:,} landing rows in all) through raw and core in "
        f"{pipeline_s:.0f} s** of Dagster run wall time (raw {result.raw.wall_s:.1f} s + core "
        f"{result.core.wall_s:.1f} s): {payments / pipeline_s:,.0f} payments/s, {landing_rows / pipeline_s:,.0f} "
        "landing rows/s."
    )
    ok = result.raw.success and result.core.success
    lines = [
        MARKER_START,
        "## Lending day: one business day, landing -> raw -> core",
        "",
        "Generated by `benchmarks/lending_day.py`; re-running it replaces this section (between the markers).",
        "",
        f"Reproduce: `{command}`",
        "",
        headline if ok else "**The pipeline did not complete: see the status column.** " + headline,
        "",
        f"The day: business date {g.business_date} of a lender started {WORLD_START}, simulator scale "
        f"{result.scale:g} (seed {SEED}), "
        + ", ".join(f"{name} {rows:,}" for name, rows in g.rows.items())
        + f". Generating and writing the drop took {g.wall_s:.1f} s ({g.cpu_s:.1f} s CPU), not counted above.",
        "",
        "What runs: run 1 is `raw_landing_drop` for the day (one step: verify the drop against its manifest, parse "
        "and validate with Arrow, one pyiceberg commit per raw table). Run 2 is every core asset that needs only "
        "that day, each a Spark step through write-audit-publish (write to an audit branch, run its audits there, "
        "publish to main). Both on an ephemeral Dagster instance with the in-process executor, so steps run one "
        "after another on one Spark session (`local[*]`) for the process. A step's seconds are from its "
        "STEP_START to its STEP_SUCCESS/FAILURE event; CPU s are the CPU seconds of this process and its children "
        "(the JVM, the PySpark workers) over that interval, which another process's load does not inflate; rows "
        "are the rows committed (`dagster/row_count`; for core, the rows published to main). One run "
        "of each (a pipeline this size is not repeated; expect run-to-run spread of 10-20% on a shared machine).",
        "",
        f"History: the day's core steps read the history of two tables, so the lake first gets core/loans "
        f"({s.loans:,} rows: {HISTORY_KINDS[result.history]}; "
        f"the {s.referenced_loans:,} loan ids the day's payments, refunds, charge-offs and recoveries name are real, "
        f"the other ids and all other columns are synthetic) and core/merchants ({s.merchants:,} rows) for the "
        f"{s.business_days} business days before it, in {s.commits:,} commits (one per table and day, like the "
        f"daily runs, so that a history read plans over as many manifests). That took {s.wall_s:.0f} s, not "
        "counted. Without it the `references_a_loan` audits fail: the day's payments pay loans originated up to "
        "two years earlier. Raw tables and the other core tables have no history here; the day's steps read only "
        "the day's partition of them.",
        "",
        table(DAY_HEADER, day_rows(result), "lrrrrl"),
        "",
        "Where each step's time went, in seconds, cut at the events the step reported (for core: the first cut "
        "covers reading raw, the transform, the write to the audit branch, caching the branch and the first "
        "audit; each audit after it is its own cut; publish is the commit to main):",
        "",
        table(["asset", "seconds", "parts"], breakdown_rows([result.raw, result.core]), "lrl"),
        "",
        *[f"- {n}" for n in notes(result)],
        f"- Spark session start (JVM launch), before the runs: {result.spark_start_s:.1f} s.",
        *memory_lines(monitor),
        f"- 1-minute load average: {load[0]:.1f} at the start, {load[1]:.1f} at the end (raw run "
        f"{result.raw.load_before:.1f} -> {result.raw.load_after:.1f}, core run {result.core.load_before:.1f} -> "
        f"{result.core.load_after:.1f}) on {os.cpu_count()} CPUs; above {os.cpu_count()} means other work shared "
        "the machine and stretched the wall times.",
        "",
        "### The day-chained pair: core/loan_daily_status and core/ledger_entries",
        "",
        "Not measured on the benchmark day: both carry balances from the previous business day, so a 2025 day needs "
        "the lender's whole history (2023-01-03 on) materialized first.",
        "",
    ]
    if book is None:
        lines += [book_note, ""]
    else:
        n = len(book.days)
        lines += [
            f"Measured instead on a smaller lender from its first day: scale {book.scale:g}, the {n} business days "
            f"{book.days[0]}..{book.days[-1]} ({book.landing_rows.get('payments', 0):,} payments, "
            f"{book.landing_rows.get('loans', 0):,} loans in all; generated in {book.generated_s:.0f} s). One range "
            f"run materialized raw and the day's core assets for all {n} days ({book.setup.wall_s:.0f} s), then a "
            f"range run the pair for the first {n - 1} days (the status asset walks them in order) and a "
            f"single-partition run the pair for day {n}, as a daily run would.",
            "",
            table(BOOK_HEADER, book_rows(book), "lrrrrrrrl"),
            "",
            book_note,
            "",
        ]
    lines += ["Environment:", "", *[f"- {k}: {v}" for k, v in env.items()], MARKER_END]
    return "\n".join(lines)


def book_summary(book: BookResult | None, day: DayResult) -> str:
    """What the book run implies for a daily run on the benchmark day, extrapolated from measured rows and rates."""
    if book is None:
        return ""
    status = book.last_day.step("core/loan_daily_status")
    if status is None or not status.total_rows or not status.seconds:
        return ""
    rate = status.total_rows / status.seconds
    loans_before = day.seeded.loans if day.history == "full" else None
    text = (
        "core/loan_daily_status writes a row for every loan ever originated, every business day "
        f"({status.total_rows:,} rows for day {len(book.days)} here, {rate:,.0f} rows/s), and each day re-aggregates "
        "the whole payment and "
        "schedule history to find days past due."
    )
    if loans_before is None:
        return text
    g = day.generated
    book_rows = loans_before + g.rows.get("loans", 0)
    per_loan = g.rows.get("repayment_schedule", 0) / max(1, g.rows.get("loans", 1))
    payments = day.seeded.business_days * g.rows.get("payments", 0)
    return (
        text + f" On the benchmark day the book holds {book_rows:,} loans, and the history holds about "
        f"{book_rows * per_loan:,.0f} schedule rows ({per_loan:.1f} per loan on the day) and at most {payments:,} "
        f"payments ({day.seeded.business_days} business days at the day's count). At the rate measured here, "
        f"that one partition would take about {book_rows / rate / 60:,.0f} minutes on this machine, not counting "
        "the larger history scans."
    )


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
        "--loan-history",
        choices=("full", "referenced"),
        default="full",
        help="core/loans history: every loan before the day (realistic) or only those the day references (fast)",
    )
    parser.add_argument("--driver-memory", default="6g", help="spark.driver.memory (local mode: the whole Spark)")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--book-scale", type=float, default=26.0, help="scale of the day-chained pair's run")
    parser.add_argument("--book-days", type=int, default=35, help="business days of that run; 0 skips it")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write the section to")
    parser.add_argument("--no-write", action="store_true", help="print the tables only; leave the markdown alone")
    args = parser.parse_args(argv)
    if args.book_days == 1 or args.book_days < 0:
        parser.error("--book-days must be 0 (skip) or at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Beta parameters (backfill_policy, pools) are deliberate; their warnings would drown the output.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    # PySpark warns on every PII UDF that without pandas it cannot use Arrow; the notes report it once.
    warnings.filterwarnings("ignore", module="pyspark.sql.udf")
    command = " ".join([".venv/bin/python -m benchmarks.lending_day", *(argv if argv is not None else sys.argv[1:])])
    scratch = Path(tempfile.mkdtemp(prefix="lending_day_bench_"))
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
    monitor = Monitor()
    load_start = load_average()
    monitor.start()
    book: BookResult | None = None
    try:
        result = run_day(spark, scratch, monitor, args.scale, args.date, args.loan_history == "full")
        book_note = "Not measured: skipped with `--book-days 0`."
        if args.book_days:
            book = run_book(spark, scratch, monitor, args.book_scale, args.book_days)
            book_note = book_summary(book, result)
        env = environment(spark)
    finally:
        monitor.stop()
        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()  # before its local dir goes
        shutil.rmtree(scratch, ignore_errors=True)
    load_end = load_average()
    print(text_table(DAY_HEADER, [[c.replace("**", "") for c in r] for r in day_rows(result)]))
    print()
    print(text_table(["asset", "seconds", "parts"], breakdown_rows([result.raw, result.core]), "lrl"))
    if book is not None:
        print()
        print(text_table(BOOK_HEADER, book_rows(book)))
    print()
    for line in [*notes(result), *memory_lines(monitor)]:
        print(line.removeprefix("- "))
    print(f"load average: {load_start:.1f} at start, {load_end:.1f} at end")
    if not args.no_write:
        section = markdown_section(result, book, book_note, monitor, env, command, (load_start, load_end))
        update_section(args.output, section, MARKER_START, MARKER_END)
        print(f"\nwrote the lending_day section of {args.output}", file=sys.stderr)
    ok = result.raw.success and result.core.success
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
