"""Benchmark: a year-long backfill of the core loan assets, three ways, on the same raw data.

    .venv/bin/python -m benchmarks.backfill [--days 365] [--scale 0.02] [--per-partition-days 20] [--write-docs]

Setup (not timed as a mode): the simulator lands ``--days`` business days of drops from 2023-01-03 once; each mode
then gets a fresh data dir with a copy of those drops, and raw is loaded into it in-process (``dg.materialize`` of
the raw assets in partition-range runs of 23 days, the raw policy), recorded in the mode's Dagster instance so that
the landing sensor sees every landed day as loaded. Raw is rebuilt per mode (pyiceberg's metadata holds absolute
paths, so a lake folder cannot be copied).

Modes, one after another (never in parallel), each after waiting for other heavy work on the machine to end:

- ``policy``: ``batch-platform backfill 'group:lending_core' --from FIRST --to LAST`` against ``dagster-webserver`` and
  ``dagster-daemon`` on a temporary DAGSTER_HOME with the project's dagster.yaml and workspace.yaml
  (tests/dagster_stack.py); the core assets' chosen ``BackfillPolicy.multi_run(max_partitions_per_run=23)``.
- ``policy-small``: the same over the first ``--per-partition-days`` days only: the comparison point for
- ``per-partition``: the same backfill over those days with the core assets' BackfillPolicy removed (a
  benchmark-only code location, benchmarks/per_partition_location.py): one run per partition. Its cost per day
  is extrapolated linearly to ``--days`` in the table, labelled as such.
- ``bare``: one process, one Spark session, no daemon and no run workers: a single in-process run of the same
  asset code over the whole range (``dg.materialize(core_assets)`` with partition-range tags, ephemeral instance).

Per mode: wall time from the backfill's submission to its end (from Dagster's own timestamps), the runs (tag
``dagster/backfill``) with their start, end and step timings, the time covered by at least one run, and checks:
every partition of every core asset materialized exactly once, every run succeeded, no duplicate
(business_date, loan_id) in core/loan_daily_status, and rows per table and day identical across modes.
``--results`` keeps each finished mode in a JSON file (a later run with other ``--modes`` adds to it);
``--write-docs`` writes this benchmark's section of docs/benchmarks.md from every mode in it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyiceberg
import pyspark
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
    PARTITION_NAME_TAG,
)
from pyspark.sql import SparkSession

from assets.lending.contract import LENDING_START
from assets.lending.core import CORE_BACKFILL
from assets.lending.domain import lending_assets, lending_lake_tables
from assets.lending.landing import LandingZone, LandingZoneResource, drop_prefix
from assets.lending.simulator import simulate
from assets.lending.tables import CORE_LOAN_DAILY_STATUS, LENDING_PARTITIONS
from assets.lending.world import SimulationConfig
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import LOCAL_SPARK_CONFIG, SparkResource
from benchmarks.bare_backfill import DRIVER_MEMORY as BARE_DRIVER_MEMORY
from benchmarks.landing_sensor import cpu_model
from benchmarks.lending_day import QUIET_LOGS, table, text_table
from benchmarks.stack import TEST_PII_KEY, WorkspaceStack, run_backfill_cli, write_workspace

MARKER_START = "<!-- backfill:start -->"
MARKER_END = "<!-- backfill:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SEED = 7
FIRST_DAY = date.fromisoformat(LENDING_START)
SELECTION = "group:lending_raw or group:lending_core or group:lending_reporting"
STATUS_ASSET = CORE_LOAN_DAILY_STATUS.asset_key.to_user_string()
# Other people's heavy work this benchmark waits for before a timed mode (the machine has 2 cores).
OTHER_WORK = ("pytest", "dagster-daemon", "dagster-webserver", "dagster dev", "benchmarks.")
QUIET_WAIT_S = 900.0
WATCH_INTERVAL_S = 15.0
PROGRESS_EVERY_S = 120.0

POLICY, POLICY_SMALL, PER_PARTITION, BARE, SPARK = "policy", "policy-small", "per-partition", "bare", "spark"
MODES = (POLICY, POLICY_SMALL, PER_PARTITION, BARE, SPARK)
BACKFILL_LOCATION = "benchmarks.backfill_location"
LOCATION_OF_MODE = {POLICY: "policy_defs", POLICY_SMALL: "policy_defs", PER_PARTITION: "per_partition_defs"}


def policy_text() -> str:
    return f"multi_run(max_partitions_per_run={CORE_BACKFILL.max_partitions_per_run})"


def mode_label(key: str) -> str:
    return {
        POLICY: f"chosen policy, {policy_text()}",
        POLICY_SMALL: f"chosen policy, {policy_text()}",
        PER_PARTITION: "one run per partition (no BackfillPolicy)",
        BARE: "single in-process run of the same code",
        SPARK: "bare PySpark job of the same transforms (no Dagster, no Iceberg)",
    }[key]


# -- results ---------------------------------------------------------------------------------------------------------


@dataclass
class RunTiming:
    """One Dagster run: when it was created, launched, started and ended, what it materialized, time in steps."""

    run_id: str
    status: str
    assets: list[str]  # the assets the run materialized
    partitions: int
    materializations: int  # (asset, partition) pairs materialized
    created: float
    launched: float | None  # RUN_STARTING: dequeued and handed to the run launcher (None for an in-process run)
    start: float | None  # RUN_START: the run worker has loaded the code and begins executing
    end: float | None
    step_seconds: float
    steps: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0

    @property
    def launch_seconds(self) -> float | None:
        """Launch to start: a new run worker process importing Dagster, PySpark and pyiceberg, loading the code
        location and setting up the run."""
        if self.start is None or self.launched is None:
            return None
        return self.start - self.launched

    @property
    def queued_seconds(self) -> float | None:
        """Creation to launch: waiting in the run queue (concurrency limits) for the coordinator to dequeue it."""
        if self.launched is None:
            return None
        return self.launched - self.created


@dataclass(frozen=True)
class CriticalPath:
    """submit -> first status run start (before_s) + status runs (status_s) + gaps between them (gaps_s) + last
    status run end -> backfill end (after_s) = the mode's wall time."""

    before_s: float
    first_created_s: float  # submit -> the backfill daemon created the first status run
    first_queued_s: float | None  # that run's wait in the run queue
    status_s: float
    status_runs: int
    gaps_s: float
    after_s: float


@dataclass
class ModeResult:
    key: str
    label: str
    days: list[str]
    wall_s: float
    submitted: float
    ended: float
    runs: list[RunTiming]
    problems: list[str]
    load_before: float
    load_during_mean: float
    load_during_max: float
    waited_s: float
    other_work_seen: list[str]
    rows: dict[str, dict[str, int]]
    backfill_status: str
    measured_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def asset_partitions(self) -> int:
        return sum(r.materializations for r in self.runs)

    @property
    def run_seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    @property
    def covered_seconds(self) -> float:
        """Wall time during which at least one run was executing (the union of the runs' start-end intervals)."""
        intervals = sorted((r.start, r.end) for r in self.runs if r.start is not None and r.end is not None)
        covered, current_start, current_end = 0.0, None, None
        for start, end in intervals:
            if current_end is None or current_start is None or start > current_end:
                if current_end is not None and current_start is not None:
                    covered += current_end - current_start
                current_start, current_end = start, end
            else:
                current_end = max(current_end, end)
        if current_end is not None and current_start is not None:
            covered += current_end - current_start
        return covered

    @property
    def first_run_latency_s(self) -> float | None:
        """Submission to the first run's start: daemon start-up (it starts after the submit), the backfill daemon's
        first tick, queueing and the run worker's launch."""
        starts = [r.start for r in self.runs if r.start is not None]
        return min(starts) - self.submitted if starts else None

    def status_runs(self) -> list[RunTiming]:
        """The runs of the day-chained core/loan_daily_status, in order."""
        return sorted(
            (r for r in self.runs if STATUS_ASSET in r.assets and r.start is not None and r.end is not None),
            key=lambda r: r.start or 0.0,
        )

    def status_chain_gaps(self) -> list[float]:
        """Idle time between a core/loan_daily_status run's end and the next one's start: the day-chained asset
        cannot start a run before the previous one has materialized its days, so these gaps are pure scheduling."""
        chain = self.status_runs()
        return [(later.start or 0.0) - (earlier.end or 0.0) for earlier, later in itertools.pairwise(chain)]

    def critical_path(self) -> CriticalPath | None:
        """The wall time cut along the day-chained asset's runs, which no policy can run side by side; None for a
        single run."""
        chain = self.status_runs()
        if len(self.runs) < 2 or not chain:
            return None
        first, last = chain[0], chain[-1]
        return CriticalPath(
            before_s=(first.start or 0.0) - self.submitted,
            first_created_s=first.created - self.submitted,
            first_queued_s=first.queued_seconds,
            status_s=sum(r.seconds for r in chain),
            status_runs=len(chain),
            gaps_s=sum(self.status_chain_gaps()),
            after_s=self.ended - (last.end or 0.0),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModeResult:
        runs = [RunTiming(**r) for r in data.pop("runs")]
        return cls(runs=runs, **data)


def load_results(path: Path | None) -> tuple[dict[str, Any], dict[str, ModeResult]]:
    """The setup (scale, days, simulation time) and the finished modes kept in ``path``."""
    if path is None or not path.exists():
        return {}, {}
    data = json.loads(path.read_text())
    return data["setup"], {key: ModeResult.from_json(value) for key, value in data["modes"].items()}


def save_results(path: Path | None, setup: dict[str, Any], results: dict[str, ModeResult]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        modes = {k: v.to_json() for k, v in results.items()}
        path.write_text(json.dumps({"setup": setup, "modes": modes}, indent=1))


# -- the machine -------------------------------------------------------------------------------------------------------


def own_processes() -> set[int]:
    """This process, its ancestors (the shell that started it) and its descendants (the stack, run workers)."""
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents()), *(p.pid for p in me.children(recursive=True))}


def other_work() -> list[str]:
    mine = own_processes()
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if process.info["pid"] in mine:
            continue
        command = " ".join(process.info["cmdline"] or [])
        if any(pattern in command for pattern in OTHER_WORK):
            found.append(f"{process.info['pid']}: {command[:120]}")
    return found


def wait_for_quiet_machine(max_wait_s: float = QUIET_WAIT_S) -> tuple[float, list[str]]:
    """Wait (up to ``max_wait_s``) until no one else's pytest, Dagster services or benchmark runs; returns the
    seconds waited and what was still running when the wait gave up (empty if the machine got quiet)."""
    started = time.monotonic()
    while True:
        found = other_work()
        waited = time.monotonic() - started
        if not found:
            return waited, []
        if waited >= max_wait_s:
            print(f"still busy after {waited:.0f} s, going ahead: {found}", file=sys.stderr, flush=True)
            return waited, found
        print(f"waiting for other work to end ({waited:.0f} s): {found}", file=sys.stderr, flush=True)
        time.sleep(30.0)


class Watcher:
    """Samples the 1-minute load average during a mode and prints the runs' progress now and then."""

    def __init__(self, home: Path | None = None) -> None:
        self._home = home
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="benchmark-watcher", daemon=True)
        self.loads: list[float] = []

    def _progress(self, instance: dg.DagsterInstance) -> str:
        counts = Counter(r.dagster_run.status.value for r in instance.get_run_records())
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))

    def _run(self) -> None:
        instance = dg.DagsterInstance.from_config(str(self._home)) if self._home else None
        last_print = time.monotonic()
        try:
            while not self._stop.wait(WATCH_INTERVAL_S):
                self.loads.append(os.getloadavg()[0])
                if instance is not None and time.monotonic() - last_print > PROGRESS_EVERY_S:
                    last_print = time.monotonic()
                    print(f"[{datetime.now():%H:%M:%S}] runs: {self._progress(instance)}; load {self.loads[-1]:.1f}")
                    sys.stdout.flush()
        finally:
            if instance is not None:
                instance.dispose()

    @contextmanager
    def watching(self) -> Iterator[Watcher]:
        self.loads.append(os.getloadavg()[0])
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.loads.append(os.getloadavg()[0])


# -- setup: drops and raw ----------------------------------------------------------------------------------------------


def business_day_keys(days: int) -> list[str]:
    keys = list(LENDING_PARTITIONS.get_partition_keys()[:days])
    if len(keys) < days:
        raise ValueError(f"only {len(keys)} business days exist since {LENDING_START}")
    return keys


def copy_drops(source: Path, target: Path, days: Iterable[str]) -> None:
    """The landed drops of ``days`` only: a drop landed for another day would start the landing sensor."""
    for day in days:
        prefix = drop_prefix(date.fromisoformat(day), 1)
        shutil.copytree(source / prefix, target / prefix)


def range_tags(days: Sequence[str]) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}


# -- measuring and checking a mode -------------------------------------------------------------------------------------


def partitions_of(tags: dict[str, str]) -> int:
    if PARTITION_NAME_TAG in tags:
        return 1
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        key_range = dg.PartitionKeyRange(tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG])
        return len(LENDING_PARTITIONS.get_partition_keys_in_range(key_range))
    return 0


STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
TIMED_EVENTS = {*STEP_EVENTS, dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.ASSET_MATERIALIZATION}


def run_timings(instance: dg.DagsterInstance, filters: dg.RunsFilter) -> list[RunTiming]:
    timings = []
    for record in instance.get_run_records(filters=filters):
        run = record.dagster_run
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        launched = None
        materialized: Counter[str] = Counter()
        for entry in instance.all_logs(run.run_id, of_type=TIMED_EVENTS):
            step = entry.step_key or ""
            if entry.dagster_event_type == dg.DagsterEventType.RUN_STARTING:
                launched = entry.timestamp
            elif entry.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                key = entry.asset_materialization.asset_key if entry.asset_materialization else None
                materialized[key.to_user_string() if key else ""] += 1
            elif entry.dagster_event_type == dg.DagsterEventType.STEP_START:
                starts[step] = min(starts.get(step, entry.timestamp), entry.timestamp)
            else:
                ends[step] = max(ends.get(step, entry.timestamp), entry.timestamp)
        timings.append(
            RunTiming(
                run_id=run.run_id,
                status=run.status.value,
                assets=sorted(materialized),
                partitions=partitions_of(dict(run.tags)),
                materializations=sum(materialized.values()),
                created=record.create_timestamp.timestamp(),
                launched=launched,
                start=record.start_time,
                end=record.end_time,
                step_seconds=sum(ends[s] - starts[s] for s in starts if s in ends),
                steps=len(starts),
            )
        )
    return sorted(timings, key=lambda r: r.start or r.created)


def materializations_per_partition(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> Counter[str]:
    counts: Counter[str] = Counter()
    cursor = None
    while True:
        page = instance.fetch_materializations(asset_key, limit=1000, cursor=cursor)
        counts.update(record.partition_key or "" for record in page.records)
        if not page.has_more:
            return counts
        cursor = page.cursor


def rows_per_day(lake: IcebergLakeResource) -> dict[str, dict[str, int]]:
    """Rows of every partitioned lending table by day, read straight from the Iceberg tables."""
    rows = {}
    for lake_table in lending_lake_tables:
        column = lake_table.partition_column
        if column is None:
            continue
        scanned = lake.load(lake_table).scan(selected_fields=(column,)).to_arrow()
        counts = scanned.group_by(column).aggregate([(column, "count")])
        rows[lake_table.asset_key.to_user_string()] = {
            str(day): int(n)
            for day, n in zip(counts[column].to_pylist(), counts[f"{column}_count"].to_pylist(), strict=True)
        }
    return rows


def duplicate_status_rows(lake: IcebergLakeResource) -> int:
    """Rows of core/loan_daily_status beyond the first per (business_date, loan_id)."""
    column = CORE_LOAN_DAILY_STATUS.partition_column
    assert column is not None, "core/loan_daily_status is partitioned"
    scanned = lake.load(CORE_LOAN_DAILY_STATUS).scan(selected_fields=(column, "loan_id")).to_arrow()
    counts = scanned.group_by([column, "loan_id"]).aggregate([("loan_id", "count")])
    extra = pc.sum(pc.subtract(counts["loan_id_count"], pa.scalar(1, pa.int64()))).as_py()
    return int(extra or 0)


def check_mode(
    instance: dg.DagsterInstance,
    lake: IcebergLakeResource,
    days: Sequence[str],
    runs: Sequence[RunTiming],
    one_partition_per_run: bool = False,
) -> list[str]:
    """What is wrong with a finished mode (empty when all is well)."""
    problems = [f"run {r.run_id} ended {r.status}" for r in runs if r.status != dg.DagsterRunStatus.SUCCESS.value]
    expected = Counter(dict.fromkeys(days, 1))
    for assets_def in lending_assets:
        for key in assets_def.keys:
            counts = materializations_per_partition(instance, key)
            if counts != expected:
                wrong = sorted(p for p in set(counts) | set(expected) if counts[p] != 1 or p not in expected)
                problems.append(f"{key.to_user_string()}: not materialized exactly once per day: {wrong[:5]}")
    duplicates = duplicate_status_rows(lake)
    if duplicates:
        problems.append(f"{STATUS_ASSET}: {duplicates} duplicate (business_date, loan_id) rows")
    if one_partition_per_run:
        problems += [f"run {r.run_id} has {r.partitions} partitions" for r in runs if r.partitions != 1]
    return problems


# -- the modes -------------------------------------------------------------------------------------------------------


def run_under_daemon(key: str, days: Sequence[str], scratch: Path, landing: Path, timeout_s: float) -> ModeResult:
    """The backfill from raw to reporting through ``batch-platform backfill`` on a real webserver + daemon."""
    print(f"\n== {key}: {len(days)} days {days[0]}..{days[-1]} ==", flush=True)
    workspace = write_workspace(
        scratch / f"{key}_workspace.yaml", BACKFILL_LOCATION, LOCATION_OF_MODE[key], f"batch_platform_{key}"
    )
    with WorkspaceStack.serving(scratch / key, workspace) as stack:
        copy_drops(landing, stack.landing_dir, days)
        instance = stack.instance()
        waited, seen = wait_for_quiet_machine()
        load_before = os.getloadavg()[0]
        watcher = Watcher(stack.home)
        with watcher.watching():
            cli = run_backfill_cli(
                stack,
                [
                    SELECTION,
                    "--from",
                    days[0],
                    "--to",
                    days[-1],
                    "--title",
                    f"benchmark {key}",
                    "--tag",
                    f"batch-platform/benchmark=backfill-{key}",
                    "--poll-seconds",
                    "10",
                ],
                start_daemon_after_submit=True,
                timeout=timeout_s,
            )
        print(cli.output[-3000:], flush=True)
        if cli.backfill_id is None:
            raise RuntimeError(f"no backfill was submitted:\n{cli.output}")
        backfill = stack.wait_backfill(cli.backfill_id, timeout=120.0)
        runs = run_timings(instance, dg.RunsFilter(tags={BACKFILL_ID_TAG: cli.backfill_id}))
        ended = backfill.backfill_end_timestamp or max((r.end or 0.0) for r in runs)
        lake = IcebergLakeResource(data_dir=str(stack.data_dir))
        problems = check_mode(instance, lake, days, runs, one_partition_per_run=key == PER_PARTITION)
        if backfill.status != BulkActionStatus.COMPLETED_SUCCESS:
            problems.insert(0, f"backfill ended {backfill.status.value}")
        if cli.exit_code != 0:
            problems.insert(0, f"batch-platform backfill exited {cli.exit_code}")
        return ModeResult(
            key=key,
            label=mode_label(key),
            days=list(days),
            wall_s=ended - backfill.backfill_timestamp,
            submitted=backfill.backfill_timestamp,
            ended=ended,
            runs=runs,
            problems=problems,
            load_before=load_before,
            load_during_mean=statistics.fmean(watcher.loads),
            load_during_max=max(watcher.loads),
            waited_s=waited,
            other_work_seen=seen,
            rows=rows_per_day(lake),
            backfill_status=backfill.status.value,
        )


def run_in_process(days: Sequence[str], scratch: Path, landing: Path) -> ModeResult:
    """The same asset code from raw to reporting over the whole range as ONE in-process run: no daemon, no run
    worker, one Spark session in this process."""
    print(f"\n== {BARE}: {len(days)} days {days[0]}..{days[-1]} ==", flush=True)
    data_dir = scratch / BARE / "data"
    landing_dir = data_dir / "landing"
    copy_drops(landing, landing_dir, days)
    with dg.DagsterInstance.ephemeral() as instance:
        waited, seen = wait_for_quiet_machine()
        load_before = os.getloadavg()[0]
        lake = IcebergLakeResource(data_dir=str(data_dir))
        # The code location's local resources (same Spark settings), pointed at this mode's data dir.
        resources = {
            "lake": lake,
            "spark": SparkResource(),
            "pii": PiiTokenizer(key=TEST_PII_KEY),
            "landing": LandingZoneResource(uri=str(landing_dir)),
        }
        watcher = Watcher()
        try:
            with watcher.watching():
                started = time.time()
                result = dg.materialize(
                    lending_assets,
                    resources=resources,
                    instance=instance,
                    tags=range_tags(days),
                    run_config=QUIET_LOGS,
                    raise_on_error=False,
                )
                ended = time.time()
        finally:
            session = SparkSession.getActiveSession()
            if session is not None:
                session.stop()
        runs = run_timings(instance, dg.RunsFilter(run_ids=[result.run_id]))
        problems = check_mode(instance, lake, days, runs)
        return ModeResult(
            key=BARE,
            label=mode_label(BARE),
            days=list(days),
            wall_s=ended - started,
            submitted=started,
            ended=ended,
            runs=runs,
            problems=problems,
            load_before=load_before,
            load_during_mean=statistics.fmean(watcher.loads),
            load_during_max=max(watcher.loads),
            waited_s=waited,
            other_work_seen=seen,
            rows=rows_per_day(lake),
            backfill_status="n/a (no backfill)",
        )


def parquet_rows_per_day(root: Path) -> dict[str, dict[str, int]]:
    """Rows of every partitioned lending table by day, from the bare job's Parquet folders."""
    rows = {}
    for lake_table in lending_lake_tables:
        folder = root / lake_table.identifier
        if lake_table.partition_column is None or not folder.exists():
            continue
        files = pads.dataset(folder, format="parquet", partitioning="hive")
        if not files.files:  # a table with no row in the range (Spark wrote only its _SUCCESS marker)
            continue
        scanned = files.to_table(columns=[lake_table.partition_column])
        counts = Counter(str(day) for day in scanned[lake_table.partition_column].to_pylist())
        rows[lake_table.asset_key.to_user_string()] = dict(counts)
    return rows


def run_bare_spark(days: Sequence[str], scratch: Path, landing: Path, timeout_s: float) -> ModeResult:
    """The domain's transforms from landing to reporting in one PySpark process writing plain Parquet
    (benchmarks/bare_backfill.py): the platform's compute without its orchestration, lake and audits."""
    print(f"\n== {SPARK}: {len(days)} days {days[0]}..{days[-1]} ==", flush=True)
    landing_dir = scratch / SPARK / "landing"
    output = scratch / SPARK / "tables"
    copy_drops(landing, landing_dir, days)
    waited, seen = wait_for_quiet_machine()
    load_before = os.getloadavg()[0]
    argv = [sys.executable, "-m", "benchmarks.bare_backfill", "--landing", str(landing_dir), "--output", str(output)]
    argv += ["--first", days[0], "--last", days[-1], "--chunk-days", str(CORE_BACKFILL.max_partitions_per_run)]
    watcher = Watcher()
    with watcher.watching():
        started = time.time()
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        ended = time.time()
    print("\n".join(line for line in completed.stdout.splitlines() if not line.startswith("[Stage")), flush=True)
    problems = [] if completed.returncode == 0 else [f"exited {completed.returncode}: {completed.stderr[-2000:]}"]
    return ModeResult(
        key=SPARK,
        label=mode_label(SPARK),
        days=list(days),
        wall_s=ended - started,
        submitted=started,
        ended=ended,
        runs=[],
        problems=problems,
        load_before=load_before,
        load_during_mean=statistics.fmean(watcher.loads),
        load_during_max=max(watcher.loads),
        waited_s=waited,
        other_work_seen=seen,
        rows=parquet_rows_per_day(output),
        backfill_status="n/a (no backfill)",
    )


# -- reporting -------------------------------------------------------------------------------------------------------


def _s(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


MAIN_HEADER = [
    "mode",
    "runs",
    "days",
    "asset partitions",
    "wall s",
    "s per day",
    "time in runs s",
    "run-seconds",
    "overhead s",
]


def main_row(result: ModeResult) -> list[str]:
    days = len(result.days)
    return [
        f"{result.label}, {days} days",
        f"{len(result.runs):,}",
        f"{days:,}",
        f"{result.asset_partitions:,}",
        _s(result.wall_s),
        _s(result.wall_s / days, 1),
        _s(result.covered_seconds),
        _s(result.run_seconds),
        _s(result.wall_s - result.covered_seconds),
    ]


def extrapolated_row(result: ModeResult, days: int) -> list[str]:
    factor = days / len(result.days)
    wall = result.wall_s * factor
    return [
        f"{result.label}, {days} days: **extrapolated** x{factor:.1f} from {len(result.days)} days",
        f"~{len(result.runs) * factor:,.0f}",
        f"{days:,}",
        f"~{result.asset_partitions * factor:,.0f}",
        f"~{wall:,.0f} ({_duration(wall)})",
        _s(result.wall_s / len(result.days), 1),
        f"~{result.covered_seconds * factor:,.0f}",
        f"~{result.run_seconds * factor:,.0f}",
        f"~{(result.wall_s - result.covered_seconds) * factor:,.0f}",
    ]


DETAIL_HEADER = [
    "mode",
    "submit -> first run s",
    "median run s",
    "median queued s",
    "median launch s",
    "launch, all runs s",
    "in steps, all runs s",
    "status runs",
    "median status gap s",
    "status gaps, all s",
    "load before / mean / max",
]


def detail_row(result: ModeResult) -> list[str]:
    gaps = result.status_chain_gaps()
    launches = [r.launch_seconds for r in result.runs]
    return [
        f"{result.label}, {len(result.days)} days",
        _s(result.first_run_latency_s, 1),
        _s(_median(r.seconds for r in result.runs), 1),
        _s(_median(r.queued_seconds for r in result.runs), 1),
        _s(_median(launches), 1),
        _s(sum(s for s in launches if s is not None)),
        _s(sum(r.step_seconds for r in result.runs)),
        str(sum(STATUS_ASSET in r.assets for r in result.runs)),
        _s(_median(gaps), 1),
        _s(sum(gaps)),
        f"{result.load_before:.1f} / {result.load_during_mean:.1f} / {result.load_during_max:.1f}",
    ]


CRITICAL_HEADER = [
    "mode",
    "submit -> first status run starts s",
    "its creation / queue wait s",
    "status runs s",
    "gaps between them s",
    "last status run -> end s",
    "wall s",
]


def critical_rows(results: Iterable[ModeResult]) -> list[list[str]]:
    rows = []
    for result in results:
        path = result.critical_path()
        if path is None:
            continue
        rows.append(
            [
                f"{result.label}, {len(result.days)} days",
                _s(path.before_s),
                f"{_s(path.first_created_s)} / {_s(path.first_queued_s)}",
                f"{_s(path.status_s)} ({path.status_runs} runs)",
                _s(path.gaps_s),
                _s(path.after_s),
                _s(result.wall_s),
            ]
        )
    return rows


def ordered(results: dict[str, ModeResult]) -> list[ModeResult]:
    return [results[k] for k in MODES if k in results]


def consistency(results: dict[str, ModeResult]) -> list[str]:
    """Rows per (table, day) compared between modes on the days they share."""
    lines = []
    modes = ordered(results)
    for i, left in enumerate(modes):
        for right in modes[i + 1 :]:
            shared = set(left.days) & set(right.days)
            differing = [
                f"{name} {day}"
                for name in sorted(set(left.rows) | set(right.rows))
                for day in sorted(shared)
                if left.rows.get(name, {}).get(day, 0) != right.rows.get(name, {}).get(day, 0)
            ]
            verdict = "identical" if not differing else f"{len(differing)} differ, e.g. {differing[:3]}"
            lines.append(f"{left.key} vs {right.key} ({len(shared)} shared days): {verdict}")
    return lines


def run_mix(result: ModeResult) -> str:
    """What the runs materialized, e.g. "16 runs of 9 assets, 16 of core/loan_daily_status"."""
    kinds = Counter(r.assets[0] if len(r.assets) == 1 else f"{len(r.assets)} assets" for r in result.runs)
    parts = [f"{n} of {kind}" for kind, n in kinds.most_common()]
    return (parts[0].replace(" of ", " runs of ", 1) + "".join(f", {p}" for p in parts[1:])) if parts else "no runs"


def findings(results: dict[str, ModeResult], target_days: int) -> list[str]:
    lines = []
    policy = results.get(POLICY)
    small = results.get(POLICY_SMALL)
    per_partition = results.get(PER_PARTITION)
    bare = results.get(BARE)
    if policy is not None:
        lines.append(
            f"**Chosen policy, {len(policy.days)} days: {_duration(policy.wall_s)} ({policy.wall_s:,.0f} s, "
            f"{policy.wall_s / len(policy.days):.1f} s a day) in {len(policy.runs)} runs** ({run_mix(policy)}). "
            f"Some run was executing for {policy.covered_seconds / policy.wall_s:.0%} of the wall time; for "
            f"{policy.wall_s - policy.covered_seconds:,.0f} s none was (the daemon's start and first tick before the "
            "first run, then the gaps in the chain below)."
        )
        path = policy.critical_path()
        gaps = policy.status_chain_gaps()
        if path is not None and path.first_queued_s is not None:
            chain = path.status_s + path.gaps_s
            lines.append(
                "**The day-chained core/loan_daily_status sets the wall time, and its chain started late.** Its "
                f"first run was created {path.first_created_s:,.0f} s after the submit (once its parents' first "
                f"{CORE_BACKFILL.max_partitions_per_run} days were in) but waited {path.first_queued_s:,.0f} s in "
                "the run queue: the queue is first-in first-out with at most 2 Spark runs at a time, and the other "
                "assets' chunks had been queued before it. From then on its "
                f"{path.status_runs} runs ({path.status_s:,.0f} s) and the gaps between them ({path.gaps_s:,.0f} s, "
                f"median {_s(_median(gaps), 1)} s: the next chunk waits for the backfill daemon's next tick, every "
                f"30 s, then for the queue and a run launch) go strictly one after another: {chain:,.0f} s of the "
                f"{policy.wall_s:,.0f} s. Letting the chain start as soon as its first chunk can would save up to "
                f"the {path.first_queued_s:,.0f} s it queued, less the CPU it would then share with the other "
                "chunks on 2 cores. Not tried: Dagster's queue takes runs in order of their `dagster/priority` tag, "
                "then of creation; a backfill gives all its runs the same tags, but the project's run coordinator, "
                "which already tags each run from its assets, could raise it for runs of a self-dependent asset."
            )
    if small is not None and per_partition is not None and len(small.days) == len(per_partition.days):
        n = len(small.days)
        launches = [r.launch_seconds for r in per_partition.runs if r.launch_seconds is not None]
        gaps = per_partition.status_chain_gaps()
        steps = sum(r.step_seconds for r in per_partition.runs)
        small_steps = sum(r.step_seconds for r in small.runs)
        lines.append(
            f"**One run per partition against the chosen policy on the same {n} days: {per_partition.wall_s:,.0f} s "
            f"against {small.wall_s:,.0f} s ({per_partition.wall_s / small.wall_s:.1f}x), "
            f"{len(per_partition.runs)} runs against {len(small.runs)}** ({run_mix(per_partition)}; the policy: "
            f"{run_mix(small)}). What grows with the number of runs: each run is a new process (median launch "
            f"{_s(_median(launches), 1)} s from its launch to its start: Python, Dagster, PySpark and pyiceberg "
            f"imports and the code location load; {sum(launches):,.0f} s over all runs), starts its own Spark JVM "
            f"in its first step and re-reads what it needs from the lake: the runs spent {steps:,.0f} s in steps "
            f"against the policy's {small_steps:,.0f} s for the same rows. And the {len(gaps) + 1} "
            f"core/loan_daily_status runs form a chain with {sum(gaps):,.0f} s of idle gaps (median "
            f"{_s(_median(gaps), 1)} s)."
        )
    if per_partition is not None and len(per_partition.days) < target_days:
        factor = target_days / len(per_partition.days)
        wall = per_partition.wall_s * factor
        gaps = per_partition.status_chain_gaps()
        status_runs = per_partition.status_runs()
        chain_link = (_median(gaps) or 0.0) + (_median(r.seconds for r in status_runs) or 0.0)
        lines.append(
            f"**Extrapolated, not measured: one run per partition over {target_days} days would take about "
            f"{_duration(wall)}** ({per_partition.wall_s / len(per_partition.days):.1f} s a day x {target_days}, "
            f"~{len(per_partition.runs) * factor:,.0f} runs). Only {len(per_partition.days)} days were run, because "
            f"the full range would have held the shared machine for about that long. A floor from the day-chained "
            f"asset alone: {target_days} of its runs one after another, each a median gap plus a median run "
            f"({chain_link:.0f} s), take {_duration(target_days * chain_link)}. Both figures come from the first "
            f"{len(per_partition.days)} days, when the loan book is smallest, so they understate the later days' "
            "step time; the per-run launch, JVM start and gaps do not grow with the book."
        )
    if bare is not None:
        text = (
            f"**Single in-process run of the same code, {len(bare.days)} days: {_duration(bare.wall_s)} "
            f"({bare.wall_s:,.0f} s, {bare.wall_s / len(bare.days):.1f} s a day)**: one process, one Spark session, "
            "each core asset one step over the whole range, no daemon, no run workers, no queue."
        )
        if policy is not None and len(policy.days) == len(bare.days):
            policy_steps = sum(r.step_seconds for r in policy.runs)
            bare_steps = sum(r.step_seconds for r in bare.runs)
            text += (
                f" The chosen policy took {policy.wall_s / bare.wall_s:.1f}x as long. Its {len(policy.runs)} runs "
                f"spent {policy_steps:,.0f} s in steps against the single run's {bare_steps:,.0f} s: every run "
                "starts and warms up its own JVM and re-reads the history its assets need, and two Spark runs at a "
                "time on 2 cores each run at about half speed, so running them side by side buys no throughput "
                "here. On top of that come the scheduling gaps and the late start of the chain above."
            )
        lines.append(text)
    return lines


def java_version() -> str:
    try:
        completed = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "unknown"
    match = re.search(r'version "([^"]+)"', completed.stderr)
    return match.group(1) if match else "unknown"


def environment() -> dict[str, str]:
    memory_gib = psutil.virtual_memory().total / 2**30
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({cpu_model()}), {memory_gib:.0f} GiB RAM, {platform.system()}",
        "versions": f"Python {platform.python_version()}, dagster {dg.__version__}, pyspark {pyspark.__version__}, "
        f"pyiceberg {pyiceberg.__version__}, pyarrow {pa.__version__}, Java {java_version()}",
        "dagster": "SQLite instance storage in a temporary DAGSTER_HOME with the project's dagster.yaml "
        "(QueuedRunCoordinator subclass: at most 4 runs, 2 Spark runs at a time; a concurrency pool of 1 per lake "
        "table), DefaultRunLauncher (a run worker process per run), the code location's in-process executor",
        "spark": f"per run (and in the single run) a local session: master {LOCAL_SPARK_CONFIG['spark.master']}, "
        f"driver memory {LOCAL_SPARK_CONFIG['spark.driver.memory']}, shuffle partitions "
        f"{LOCAL_SPARK_CONFIG['spark.sql.shuffle.partitions']}",
    }


def markdown_section(
    results: dict[str, ModeResult], target_days: int, scale: float, setup: dict[str, Any], command: str
) -> str:
    modes = ordered(results)
    rows = [main_row(r) for r in modes]
    if PER_PARTITION in results and len(results[PER_PARTITION].days) < target_days:
        rows.append(extrapolated_row(results[PER_PARTITION], target_days))
    problems = [f"{r.key}: {p}" for r in modes for p in r.problems]
    waits = [
        f"{r.key}: waited {r.waited_s:.0f} s for other work"
        + (f", went ahead with {len(r.other_work_seen)} other processes running" if r.other_work_seen else "")
        for r in modes
        if r.waited_s >= 1 or r.other_work_seen
    ]
    totals = results[POLICY].rows if POLICY in results else (modes[0].rows if modes else {})
    table_rows = ", ".join(f"{name} {sum(days.values()):,}" for name, days in sorted(totals.items()))
    lines = [
        MARKER_START,
        f"## Backfill: {target_days} business days of the core loan assets, three ways",
        "",
        "Generated by `benchmarks/backfill.py`; re-running it replaces this section (between the markers).",
        "",
        f"Reproduce: `{command}`",
        "",
        "**Method.** The simulator (seed "
        f"{SEED}, scale {scale:g}) lands {target_days} business days of drops from {FIRST_DAY} "
        f"({_s(setup.get('simulate_s'))} s, once). Every mode gets a fresh data dir with a copy of the drops of "
        "the days it covers and builds the lending tables from them: raw (the landing drops checked and loaded), "
        "core (core/loan_daily_status carries each open loan from the previous business day and walks a run's "
        "days in order; core/ledger_entries and core/closed_loans read it) and reporting (portfolio, vintage "
        "curves, the merchant spec). Modes ran one after another, never in parallel; before each, the script "
        "waited until no one else's pytest, Dagster webserver/daemon or benchmark was running (up to 15 minutes).",
        "",
        f"- **chosen policy**: `batch-platform backfill '{SELECTION}' --from FIRST --to LAST`: ONE asset "
        "backfill submitted to a real `dagster-webserver`, then `dagster-daemon` started (tests/dagster_stack.py: "
        "temporary DAGSTER_HOME with the project's dagster.yaml). The workspace loads "
        "`benchmarks/backfill_location.py`: the project's definitions less the landing and restatement sensors "
        "and the daily schedule, which would request the same raw partitions as the backfill; every other "
        f"sensor runs. The lending assets' `BackfillPolicy.{policy_text()}` groups up to "
        f"{CORE_BACKFILL.max_partitions_per_run} days per run.",
        "- **one run per partition**: the same, with the lending assets' BackfillPolicy removed, which makes "
        "Dagster's asset backfill launch one run per partition (its default). Measured on the first days only, "
        "next to the chosen policy on the same days; the full range is extrapolated.",
        "- **single in-process run of the same code**: `dg.materialize(lending_assets, tags={range start/end})` "
        "on an ephemeral instance in the benchmark's own process: one run, one Spark session, the same asset code "
        "and local resources, the same write-audit-publish commits and audits. No daemon, no run worker, no queue.",
        f"- **bare PySpark job**: `benchmarks/bare_backfill.py` in a fresh process: one Spark session (driver "
        f"memory {BARE_DRIVER_MEMORY}), the landing drops read by Spark, then every table's own transform "
        "(`LakeDataset.transform`) on what its declared inputs select, in chunks of "
        f"{CORE_BACKFILL.max_partitions_per_run} days, into plain Parquet folders. No Dagster run, no Iceberg, no "
        "audit, no write-audit-publish, no row checks in raw: the platform's compute without the platform.",
        "",
        "Columns: **wall s** from the backfill's submission to its end (Dagster's own timestamps: "
        "`backfill_timestamp`, `backfill_end_timestamp`; for the single run, the `materialize` call); **asset "
        "partitions** the (asset, day) pairs the runs materialized; **time in runs** the wall time during which "
        "at least one run was executing (union of the runs' start-end); **run-seconds** the sum of every run's "
        "start-end (above the time in runs when runs overlap); **overhead** = wall - time in runs, the time with "
        "no run executing (daemon start-up, ticks, queueing, run launch).",
        "",
        table(MAIN_HEADER, rows),
        "",
        "Where the time goes: **submit -> first run** the submission to the first run's start; **run start-up** "
        "a run's start to its first step (run worker process, imports, code location load, resources; the Spark "
        "JVM starts inside the first step, so it is in the steps); **in steps** the sum of step start-end; "
        "**queued** a run's creation to its start; **status runs / gaps** the runs of the day-chained "
        "core/loan_daily_status and the idle time between one's end and the next one's start; load: 1-minute load "
        "average before the mode and its mean and max, sampled every 15 s, during it.",
        "",
        table(DETAIL_HEADER, [detail_row(r) for r in modes]),
        "",
        "The wall time cut along core/loan_daily_status, the day-chained asset whose runs can only go one after "
        "another (each needs the previous business day's balances): the time before its first run starts, its "
        "runs, the idle gaps between them, and what follows its last run (the last core/ledger_entries run, "
        "which reads it, and the backfill's completion). These add up to the wall time.",
        "",
        table(CRITICAL_HEADER, critical_rows(modes)),
        "",
        "### Findings",
        "",
        *[f"- {line}" for line in findings(results, target_days)],
        "",
        "Checks, per mode: every run succeeded, every day of every core asset was materialized exactly once "
        "(Dagster's materialization events), core/loan_daily_status has no duplicate (business_date, loan_id); "
        "and rows per table and day are compared between modes on the days they share:",
        "",
        *[f"- {line}" for line in consistency(results)],
        f"- problems: {'; '.join(problems) if problems else 'none'}",
        "",
        f"Rows written over {target_days} days (chosen policy): {table_rows}.",
        "",
        "Environment:",
        "",
        *[f"- {k}: {v}" for k, v in environment().items()],
        "- measured: " + ", ".join(f"{r.key} {r.measured_at}" for r in modes),
        *([f"- other work: {'; '.join(waits)}"] if waits else []),
        MARKER_END,
    ]
    return "\n".join(lines)


def update_markdown(path: Path, section: str) -> None:
    """Replace this benchmark's section between its markers, or append it; the rest of the file is kept."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(MARKER_START) + r".*?" + re.escape(MARKER_END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def print_tables(results: dict[str, ModeResult], target_days: int) -> None:
    modes = ordered(results)
    rows = [main_row(r) for r in modes]
    if PER_PARTITION in results and len(results[PER_PARTITION].days) < target_days:
        rows.append([c.replace("**", "") for c in extrapolated_row(results[PER_PARTITION], target_days)])
    print(text_table(MAIN_HEADER, rows))
    print()
    print(text_table(DETAIL_HEADER, [detail_row(r) for r in modes]))
    print()
    print(text_table(CRITICAL_HEADER, critical_rows(modes)))
    print()
    for line in [*consistency(results), *(f"{r.key}: {p}" for r in modes for p in r.problems)]:
        print(line)


# -- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backfill",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--days", type=int, default=365, help=f"business days to backfill from {LENDING_START}")
    parser.add_argument("--scale", type=float, default=0.02, help="simulator scale (0.02: ~20 applications a day)")
    parser.add_argument(
        "--per-partition-days", type=int, default=20, help="days run one run per partition (then extrapolated)"
    )
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--results", type=Path, help="JSON file keeping each finished mode (merged across runs)")
    parser.add_argument("--write-docs", action="store_true", help="write the backfill section of --output")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file for --write-docs")
    parser.add_argument("--timeout-hours", type=float, default=8.0, help="give up on one mode after this long")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (data dirs, Dagster homes)")
    parser.add_argument(
        "--report-only", action="store_true", help="measure nothing: print (and --write-docs) the --results file"
    )
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if args.report_only and args.results is None:
        parser.error("--report-only needs --results")
    if not 1 <= args.per_partition_days <= args.days:
        parser.error("--per-partition-days must be between 1 and --days")
    return args


def reproduce_command(days: int, scale: float, per_partition_days: int) -> str:
    return (
        f".venv/bin/python -m benchmarks.backfill --days {days} --scale {scale:g} "
        f"--per-partition-days {per_partition_days} --write-docs"
    )


def measure(args: argparse.Namespace, results: dict[str, ModeResult]) -> dict[str, Any]:
    """Land the drops, run the chosen modes one after another (saving each); returns the setup facts."""
    days = business_day_keys(args.days)
    small_days = days[: args.per_partition_days]
    timeout_s = args.timeout_hours * 3600
    setup: dict[str, Any] = {
        "days": args.days,
        "scale": args.scale,
        "command": reproduce_command(args.days, args.scale, args.per_partition_days),
    }
    scratch = Path(tempfile.mkdtemp(prefix="backfill_bench_"))
    try:
        landing = scratch / "landing"
        started = time.monotonic()
        config = SimulationConfig(seed=SEED, start=FIRST_DAY, scale=args.scale)
        simulate(config, date.fromisoformat(days[0]), date.fromisoformat(days[-1]), LandingZone.local(landing))
        setup["simulate_s"] = time.monotonic() - started
        print(f"landed {len(days)} days in {setup['simulate_s']:.0f} s (scratch {scratch})", flush=True)
        for key in args.modes:  # as listed: cheap modes first keep their results if a long one fails
            if key == POLICY:
                results[key] = run_under_daemon(key, days, scratch, landing, timeout_s)
            elif key in (POLICY_SMALL, PER_PARTITION):
                results[key] = run_under_daemon(key, small_days, scratch, landing, timeout_s)
            elif key == SPARK:
                results[key] = run_bare_spark(days, scratch, landing, timeout_s)
            else:
                results[key] = run_in_process(days, scratch, landing)
            save_results(args.results, setup, results)
            print_tables(results, args.days)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return setup


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Beta parameters (backfill_policy, pools) are deliberate; their warnings would drown the output.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", module="pyspark.sql.udf")
    setup, results = load_results(args.results)
    if args.report_only:
        if not results:
            raise SystemExit(f"--report-only: no results in {args.results}")
    else:
        setup = {**setup, **measure(args, results)}
    print()
    print_tables(results, setup["days"])
    if args.write_docs:
        section = markdown_section(results, setup["days"], setup["scale"], setup, setup["command"])
        update_markdown(args.output, section)
        print(f"\nwrote the backfill section of {args.output}", file=sys.stderr)
    return 0 if all(not r.problems for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
