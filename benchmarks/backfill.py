"""Benchmark: a year-long backfill of the lending tables from landing to reporting, four ways, on the same drops.

    .venv/bin/python -m benchmarks.backfill [--days 365] [--scale 1] [--per-partition-days 10] [--write-docs]

Setup (not timed as a mode): the simulator lands ``--days`` business days of drops from 2023-01-03 once; each mode
then gets a fresh data dir with a copy of the drops of the days it covers, and builds raw, core and reporting.

Modes, one after another (never in parallel), in the order ``--modes`` lists them, each after waiting for other
heavy work on the machine to end:

- ``policy``: ``batch-platform backfill SELECTION --from FIRST --to LAST`` against ``dagster-webserver`` and
  ``dagster-daemon`` on a temporary DAGSTER_HOME with the project's dagster.yaml (tests/dagster_stack.py); the
  workspace loads benchmarks/backfill_location.py (no landing sensor racing the backfill); the lending assets'
  chosen ``BackfillPolicy.multi_run(max_partitions_per_run=23)``.
- ``policy-small``: the same over the first ``--per-partition-days`` days only: the comparison point for
- ``per-partition``: the same backfill over those days with the lending assets' BackfillPolicy removed: one run per
  partition. Its cost per day is extrapolated linearly to ``--days`` in the table, labelled as such.
- ``bare``: one process, one Spark session, no daemon and no run workers: a single in-process run of the same
  asset code over the whole range (``dg.materialize(lending_assets)`` with partition-range tags).
- ``spark``: the bare PySpark job of the same transforms into plain Parquet (benchmarks/bare_backfill.py).

Per mode: wall time from the backfill's submission to its end (from Dagster's own timestamps), the runs (tag
``dagster/backfill``) with their start, end and step timings, the time covered by at least one run, and checks:
every partition of every lending asset materialized exactly once, every run succeeded, no duplicate
(business_date, loan_id) in core/loan_daily_status, and rows per table and day identical across modes.
``--results`` keeps each finished mode in a JSON file (a later run with other ``--modes`` adds to it);
``--write-docs`` writes this benchmark's section of docs/benchmarks.md from every mode in it
(benchmarks/backfill_report.py).
"""

from __future__ import annotations

import argparse
import os
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
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
    PARTITION_NAME_TAG,
)
from pyspark.sql import SparkSession

from assets.lending.contract import LENDING_START
from assets.lending.domain import lending_assets, lending_lake_tables
from assets.lending.landing import LandingZone, LandingZoneResource, drop_prefix
from assets.lending.simulator import simulate
from assets.lending.tables import BACKFILL, CORE_LOAN_DAILY_STATUS, LENDING_PARTITIONS
from assets.lending.world import SimulationConfig
from batch_platform.lake import IcebergLakeResource
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import SparkResource
from benchmarks.backfill_report import MARKER_END, MARKER_START, markdown_section, print_tables
from benchmarks.backfill_results import (
    BARE,
    FIRST_DAY,
    MODES,
    PER_PARTITION,
    POLICY,
    POLICY_SMALL,
    SEED,
    SELECTION,
    SPARK,
    STATUS_ASSET,
    ModeResult,
    RunTiming,
    load_results,
    mode_label,
    save_results,
)
from benchmarks.markdown import update_section
from benchmarks.runs import QUIET_LOGS
from benchmarks.stack import TEST_PII_KEY, WorkspaceStack, run_backfill_cli, write_workspace

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BACKFILL_LOCATION = "benchmarks.backfill_location"
LOCATION_OF_MODE = {POLICY: "policy_defs", POLICY_SMALL: "policy_defs", PER_PARTITION: "per_partition_defs"}
# Other people's heavy work this benchmark waits for before a timed mode (the machine has 2 cores).
OTHER_WORK = ("pytest", "dagster-daemon", "dagster-webserver", "dagster dev", "benchmarks.")
QUIET_WAIT_S = 900.0
WATCH_INTERVAL_S = 15.0
PROGRESS_EVERY_S = 120.0


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
                seconds_by_step={s: ends[s] - starts[s] for s in starts if s in ends},
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


def finished(
    key: str,
    days: Sequence[str],
    *,
    submitted: float,
    ended: float,
    quiet: tuple[float, list[str], float],
    watcher: Watcher,
    **measured: Any,
) -> ModeResult:
    """A mode's result: its wall time from ``submitted`` to ``ended``, the machine's state before (``quiet``: the
    seconds waited for other work, what was still running, the load average) and during it, and what it measured."""
    waited, seen, load_before = quiet
    return ModeResult(
        key=key,
        label=mode_label(key),
        days=list(days),
        wall_s=ended - submitted,
        submitted=submitted,
        ended=ended,
        load_before=load_before,
        load_during_mean=statistics.fmean(watcher.loads),
        load_during_max=max(watcher.loads),
        waited_s=waited,
        other_work_seen=seen,
        **measured,
    )


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
        evaluations = backfill_evaluations(stack.logs_dir / "daemon.log", cli.backfill_id)
        ended = backfill.backfill_end_timestamp or max((r.end or 0.0) for r in runs)
        lake = IcebergLakeResource(data_dir=str(stack.data_dir))
        problems = check_mode(instance, lake, days, runs, one_partition_per_run=key == PER_PARTITION)
        if backfill.status != BulkActionStatus.COMPLETED_SUCCESS:
            problems.insert(0, f"backfill ended {backfill.status.value}")
        if cli.exit_code != 0:
            problems.insert(0, f"batch-platform backfill exited {cli.exit_code}")
        return finished(
            key,
            days,
            submitted=backfill.backfill_timestamp,
            ended=ended,
            quiet=(waited, seen, load_before),
            watcher=watcher,
            runs=runs,
            problems=problems,
            rows=rows_per_day(lake),
            backfill_status=backfill.status.value,
            backfill_evaluations=evaluations,
        )


_DAEMON_LOG_LINE = re.compile(r"^(?:\x1b\[[0-9;]*m)?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+0000")


def backfill_evaluations(daemon_log: Path, backfill_id: str) -> list[float]:
    """Seconds of each of the backfill daemon's evaluations of the backfill (its "Evaluating asset backfill" line
    to its "completed iteration" line, whole seconds): the daemon then sleeps what is left of 30 s, so a run that
    waits for another run's end is launched one evaluation plus up to 30 s later."""
    seconds, began = [], None
    for line in daemon_log.read_text(errors="replace").splitlines():
        stamp = _DAEMON_LOG_LINE.match(line)
        if stamp is None or backfill_id not in line:
            continue
        at = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S").timestamp()
        if "Evaluating asset backfill" in line:
            began = at
        elif "completed iteration" in line and began is not None:
            seconds.append(at - began)
            began = None
    return seconds


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
        return finished(
            BARE,
            days,
            submitted=started,
            ended=ended,
            quiet=(waited, seen, load_before),
            watcher=watcher,
            runs=runs,
            problems=problems,
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
    argv += ["--first", days[0], "--last", days[-1], "--chunk-days", str(BACKFILL.max_partitions_per_run)]
    watcher = Watcher()
    with watcher.watching():
        started = time.time()
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        ended = time.time()
    print("\n".join(line for line in completed.stdout.splitlines() if not line.startswith("[Stage")), flush=True)
    problems = [] if completed.returncode == 0 else [f"exited {completed.returncode}: {completed.stderr[-2000:]}"]
    return finished(
        SPARK,
        days,
        submitted=started,
        ended=ended,
        quiet=(waited, seen, load_before),
        watcher=watcher,
        runs=[],
        problems=problems,
        rows=parquet_rows_per_day(output),
        backfill_status="n/a (no backfill)",
        phases=bare_phases(completed.stdout),
    )


def bare_phases(output: str) -> dict[str, float]:
    """The bare job's "<table>: <seconds> s" lines (benchmarks/bare_backfill.py prints one per part)."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^([\w.]+): ([0-9.]+) s$", output, re.MULTILINE)}


# -- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backfill",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--days", type=int, default=365, help=f"business days to backfill from {LENDING_START}")
    parser.add_argument("--scale", type=float, default=1.0, help="simulator scale (1: ~1,000 applications a day)")
    parser.add_argument(
        "--per-partition-days", type=int, default=10, help="days run one run per partition (then extrapolated)"
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
        update_section(args.output, section, MARKER_START, MARKER_END)
        print(f"\nwrote the backfill section of {args.output}", file=sys.stderr)
    return 0 if all(not r.problems for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
