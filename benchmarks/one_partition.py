"""Benchmark P1: one day of core/payments through ``dagster asset materialize``, against a bare PySpark job.

    .venv/bin/python -m benchmarks.one_partition [--scale 110] [--date 2025-04-15] [--repeats 3] [--scratch DIR]

Setup (timed apart, not compared): the simulator writes the day's drop; ``raw_landing_drop`` loads it in-process;
core/loans gets the loans the day's events name, one commit per earlier business day as the daily runs make them
(``benchmarks.lake_history.seed_history``, the ``referenced`` history), so the payments' ``references_a_loan`` audit
reads what it needs; then the two tables' maintenance runs, as the platform's daily schedule would have run it.

Compared, alternating, each a fresh process as a scheduler or an operator starts it:

- ``platform``: ``dagster asset materialize -m definitions --select core/payments --partition DAY`` against the
  lake (``BATCH_PLATFORM_DATA_DIR``) and a throwaway ``DAGSTER_HOME``: the project's code location, its Spark resource
  (the step's compute profile), write-audit-publish with the payments' three audits, one Iceberg commit.
- ``bare``: ``python -m benchmarks.bare_payments``: a Spark session with the same driver memory and shuffle
  partitions, the same raw Parquet files read, the same cents-to-money transform, Parquet written partitioned by
  business date. No Dagster, no Iceberg, no audits.

Per run: wall seconds from process start to exit, CPU seconds of the process tree (sampled every 100 ms); for the
platform, where its time went, from its run's events and the phases its step measured (process start to the
step's start, staging, each audit, the commit, the rest of the step, the step's end to the process's exit). The
bare job's output is checked to hold as many rows as the platform committed. Writes the ``one_partition`` section
of docs/benchmarks.md unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg
import psutil
import pyarrow.dataset as ds

from assets.lending.core import PAYMENTS
from assets.lending.tables import CORE_LOANS, CORE_PAYMENTS, RAW_TABLES
from assets.lending.world import SimulationConfig
from batch_platform.compute import get_profile
from batch_platform.lake import IcebergLakeResource
from batch_platform.lake.maintenance import MaintenanceConfig, maintain_table
from batch_platform.lake.selection import iceberg_filter
from batch_platform.spark import LOCAL_SPARK_CONFIG, SparkResource
from benchmarks.lake_history import SEED, WORLD_START, seed_history
from benchmarks.lending_day import PII_KEY, generate, pipeline_assets, resources_for
from benchmarks.markdown import environment, update_section
from benchmarks.runs import Monitor, StepTiming, run_assets, step_timings

RAW_PAYMENTS = RAW_TABLES["payments"]
MARKER_START = "<!-- one_partition:start -->"
MARKER_END = "<!-- one_partition:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WAYS = ("platform", "bare", "bare + audits")


@dataclass
class Measured:
    wall: dict[str, list[float]] = field(default_factory=lambda: {w: [] for w in WAYS})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {w: [] for w in WAYS})
    platform_parts: list[list[tuple[str, float]]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def median(self, way: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu if cpu else self.wall)[way])


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(start, end, CPU seconds) of one process run to completion; raises if it fails.

    CPU: each process of its tree (the Dagster run and step processes, Spark's JVM) sampled every 100 ms, its last
    sample counted; a process that lives less than a sample is missed."""
    cpu_by_pid: dict[int, float] = {}
    with tempfile.TemporaryFile("w+") as errors:
        start = time.time()
        process = psutil.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        while process.poll() is None:
            for member in [process, *process.children(recursive=True)]:
                try:
                    times = member.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                cpu_by_pid[member.pid] = times.user + times.system
            time.sleep(0.1)
        end = time.time()
        if process.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command[:3])} failed:\n{errors.read()[-3000:]}")
    return start, end, sum(cpu_by_pid.values())


def platform_parts(start: float, end: float, step: StepTiming) -> list[tuple[str, float]]:
    """The platform process's time: until its step started, the step's phases as it measured them (its
    write-audit-publish metadata), the rest of the step, and after it."""
    assert step.start is not None and step.end is not None
    phases = step.phases
    audits = [(name, seconds) for name, seconds in phases.items() if name.startswith("audit ")]
    measured = phases["wap/stage_seconds"] + phases["wap/audit_seconds"] + phases["wap/commit_seconds"]
    return [
        ("process start, code location load, run start", step.start - start),
        ("read, transform and stage the files (Spark)", phases["wap/stage_seconds"]),
        *audits,
        ("commit", phases["wap/commit_seconds"]),
        ("rest of the step (Spark session, input planning, events)", step.end - step.start - measured),
        ("freshness check step, run end, process exit", end - step.end),
    ]  # fmt: skip


def run(args: argparse.Namespace, scratch: Path, monitor: Monitor) -> Measured:
    config = SimulationConfig(seed=SEED, start=WORLD_START, scale=args.scale)
    landing, data_dir = scratch / "landing", scratch / "data"
    lake = IcebergLakeResource(data_dir=str(data_dir))
    key = args.date.isoformat()
    set_up = scratch / f"set_up_{key}_{args.scale:g}"
    if set_up.exists():
        print(f"reusing the setup in {scratch}", file=sys.stderr, flush=True)
    else:
        print(f"generating {args.date} at scale {args.scale:g}", file=sys.stderr, flush=True)
        generate(config, args.date, landing)
        print("writing the referenced core/loans history", file=sys.stderr, flush=True)
        seed_history(lake, landing, config, args.date, full=False)
        raw_asset, _, _ = pipeline_assets()
        setup_spark = SparkResource(spark_config={**LOCAL_SPARK_CONFIG, "spark.local.dir": str(scratch / "spark")})
        loaded = run_assets(
            "raw",
            [raw_asset],
            resources_for(setup_spark, lake, landing),
            dg.DagsterInstance.ephemeral(),
            monitor,
            partition_key=key,
        )
        if not loaded.success:
            raise SystemExit("loading raw failed")
        set_up.touch()
    # The lake as the platform keeps it: its daily maintenance re-packs the manifests a commit per day leaves
    # (566 of them make planning the loans' read about a second), and a re-run finds nothing to do.
    for table in (CORE_LOANS, RAW_PAYMENTS):
        maintain_table(lake, table, MaintenanceConfig(), dg.DagsterInstance.ephemeral())
    raw_files = [
        task.file.file_path
        for task in lake.load(RAW_PAYMENTS).scan(row_filter=iceberg_filter(RAW_PAYMENTS, [key])).plan_files()
    ]
    file_list = scratch / "raw_payments_files.txt"
    file_list.write_text("\n".join(path.removeprefix("file://") for path in raw_files) + "\n")
    profile = get_profile(PAYMENTS.compute)  # the bare job gets the step's driver memory
    dagster_home = scratch / "dagster_home"
    shutil.rmtree(dagster_home, ignore_errors=True)  # a reused setup's runs are not this run's
    dagster_home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "BATCH_PLATFORM_DATA_DIR": str(data_dir),
        "BATCH_PLATFORM_LANDING_URI": str(landing),
        "BATCH_PLATFORM_PII_KEY": PII_KEY,
    }
    platform = [
        str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "definitions",
        "--select", CORE_PAYMENTS.asset_key.to_user_string(), "--partition", key,
    ]  # fmt: skip
    bare_out = scratch / "bare_out"
    bare = [
        sys.executable, "-m", "benchmarks.bare_payments", "--files", str(file_list), "--output", str(bare_out),
        "--driver-memory", profile.driver_memory,
        "--shuffle-partitions", LOCAL_SPARK_CONFIG["spark.sql.shuffle.partitions"],
    ]  # fmt: skip
    loans_list = scratch / "core_loans_files.txt"
    loans_list.write_text(
        "\n".join(task.file.file_path.removeprefix("file://") for task in lake.load(CORE_LOANS).scan().plan_files())
    )
    commands = {"platform": platform, "bare": bare, "bare + audits": [*bare, "--loans", str(loans_list)]}
    measured = Measured()
    for repeat in range(args.repeats):
        for way in WAYS:
            start, end, cpu = _timed(commands[way], env)
            measured.wall[way].append(end - start)
            measured.cpu[way].append(cpu)
            print(f"{repeat + 1}/{args.repeats} {way}: {end - start:.1f} s", file=sys.stderr, flush=True)
            if way == "platform":
                instance = dg.DagsterInstance.from_config(str(dagster_home))
                latest = instance.get_runs(limit=1)[0]
                steps = [s for s in step_timings(instance, latest.run_id, monitor) if s.start is not None]
                step = next(s for s in steps if CORE_PAYMENTS.asset_key.to_user_string() in s.rows)
                measured.platform_parts.append(platform_parts(start, end, step))
                measured.rows["platform"] = step.total_rows
    measured.rows["bare"] = ds.dataset(str(bare_out), format="parquet").count_rows()
    if measured.rows["bare"] != measured.rows["platform"]:
        raise SystemExit(f"the two ways wrote different row counts: {measured.rows}")
    return measured


def _part_medians(runs: Sequence[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    """Each part's median over the runs (parts matched by position: every run of the step has the same events)."""
    return [(runs[0][i][0], statistics.median(r[i][1] for r in runs)) for i in range(min(len(r) for r in runs))]


def section(measured: Measured, args: argparse.Namespace, env: str) -> str:
    platform, platform_cpu = measured.median("platform"), measured.median("platform", cpu=True)
    table = []
    for way in WAYS:
        wall, cpu = measured.median(way), measured.median(way, cpu=True)
        ratio = "" if way == "platform" else f"**{platform / wall:.2f}** / {platform_cpu / cpu:.2f}"
        table.append(f"| {way} | {wall:.1f} | {cpu:.1f} | {measured.rows['platform'] / wall:,.0f} | {ratio} |")
    every = "; ".join(f"{w}: " + ", ".join(f"{v:.1f}" for v in measured.wall[w]) for w in WAYS)
    parts = "\n".join(f"| {name} | {seconds:.2f} |" for name, seconds in _part_medians(measured.platform_parts))
    command = (
        f".venv/bin/python -m benchmarks.one_partition --scale {args.scale:g} --date {args.date} "
        f"--repeats {args.repeats}"
    )
    return "\n".join(
        [
            MARKER_START,
            "## One partition (P1): core/payments through `dagster asset materialize` against a bare PySpark job",
            "",
            "Generated by `benchmarks/one_partition.py`; re-running it replaces this section (between the markers).",
            "",
            f"Reproduce: `{command}`",
            "",
            f"One business day ({args.date}, simulator scale {args.scale:g}): {measured.rows['platform']:,} payments. "
            "Each way a fresh process, alternating, medians of "
            f"{args.repeats}; wall from process start to exit, CPU of the process tree. The platform runs the "
            "project's code location with its Spark resource, write-audit-publish (3 audits) and one Iceberg commit; "
            "the bare job reads the same raw Parquet files, does the same cents-to-money transform and writes "
            "Parquet (no Dagster, no Iceberg); `bare + audits` also counts what the three audits count, in plain "
            "Spark, before writing. All wrote the same number of rows.",
            "",
            "| way | wall s | CPU s | rows/s | platform / this way: wall / CPU (goal: wall at most 1.25 of bare) |",
            "|:---|---:|---:|---:|:---|",
            *table,
            "",
            f"Every run's wall seconds: {every}.",
            "",
            "Where the platform's time went (medians; the step's phases as it measured them, in its "
            "write-audit-publish metadata):",
            "",
            "| part | seconds |",
            "|:---|---:|",
            parts,
            "",
            env,
            MARKER_END,
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=110.0, help="simulator scale: 110 gives about 1M payments")
    parser.add_argument("--date", type=date.fromisoformat, default=date(2025, 4, 15))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument(
        "--scratch", type=Path, help="keep the setup (lake, drop) in this folder and reuse it when run again"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="one_partition_bench_"))
    scratch.mkdir(parents=True, exist_ok=True)
    monitor = Monitor()
    monitor.start()
    try:
        measured = run(args, scratch, monitor)
        env = environment(["dagster", "pyspark", "pyiceberg"], "Spark local[*]")
    finally:
        monitor.stop()
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    text = section(measured, args, env)
    print(text)
    if not args.no_write:
        update_section(args.output, text, MARKER_START, MARKER_END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
