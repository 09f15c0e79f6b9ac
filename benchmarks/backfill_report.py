"""The backfill benchmark's tables: printed while it runs, and its section of docs/benchmarks.md (between its
markers; the findings are written by hand below the section)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import psutil
import pyarrow as pa
import pyiceberg
import pyspark

from assets.lending.tables import BACKFILL, DAY_CHAIN_BACKFILL
from batch_platform.spark import LOCAL_SPARK_CONFIG
from benchmarks.backfill_results import (
    FIRST_DAY,
    MODES,
    PER_PARTITION,
    POLICY,
    SEED,
    SELECTION,
    SPARK,
    STATUS_ASSET,
    ModeResult,
    median,
    policy_text,
    seconds_by_table,
)
from benchmarks.bare_backfill import DRIVER_MEMORY as BARE_DRIVER_MEMORY
from benchmarks.landing_sensor import cpu_model
from benchmarks.runs import table, text_table

MARKER_START = "<!-- backfill:start -->"
MARKER_END = "<!-- backfill:end -->"


def _s(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


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
        _s(median(r.seconds for r in result.runs), 1),
        _s(median(r.queued_seconds for r in result.runs), 1),
        _s(median(launches), 1),
        _s(sum(s for s in launches if s is not None)),
        _s(sum(r.step_seconds for r in result.runs)),
        str(sum(STATUS_ASSET in r.assets for r in result.runs)),
        _s(median(gaps), 1),
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


def table_seconds_lines(results: dict[str, ModeResult]) -> list[str]:
    """Where the time goes per table: the bare job's own timing of each table against the chosen policy's steps for
    it, summed over its runs (runs overlap, 2 at a time, so the sums exceed the wall time)."""
    policy, spark = results.get(POLICY), results.get(SPARK)
    if policy is None or spark is None or policy.days != spark.days:
        return []
    bare, platform_steps = seconds_by_table(spark), seconds_by_table(policy)
    names = sorted(set(bare) | set(platform_steps), key=lambda n: -platform_steps.get(n, 0.0))
    rows = [
        [
            name,
            _s(bare.get(name), 1),
            _s(platform_steps.get(name), 1),
            _s(platform_steps[name] / bare[name], 2) if bare.get(name) and name in platform_steps else "n/a",
        ]
        for name in names
    ]
    total_bare, total_steps = sum(bare.values()), sum(platform_steps.values())
    rows.append(["all tables", _s(total_bare, 1), _s(total_steps, 1), _s(total_steps / total_bare, 2)])
    return [
        "Where the time goes, per table: the bare job's own timing of each part (raw: every landing dataset read "
        "and written; then each table over all its chunks) against the chosen policy's steps for that table, summed "
        "over its runs (a step's start to its end: Spark session, reads, transform, audits, commit; two runs go at "
        "a time, so these sums exceed the wall time). The bare job's process start and Spark start are in its wall "
        "time, not in these parts.",
        "",
        table(["table", "bare job s", "chosen policy, steps s", "policy / bare"], rows),
        "",
    ]


def evaluation_lines(modes: Iterable[ModeResult]) -> list[str]:
    """How long the backfill daemon took to evaluate the backfill, per mode under the daemon (from its log)."""
    lines = [
        f"- {r.label}, {len(r.days)} days: {len(r.backfill_evaluations)} evaluations, median "
        f"{_s(median(r.backfill_evaluations))} s, {sum(r.backfill_evaluations):,.0f} s in all"
        for r in modes
        if r.backfill_evaluations
    ]
    if not lines:
        return []
    return [
        'The backfill daemon\'s evaluations of the backfill (its log\'s "Evaluating asset backfill" to "completed '
        "iteration\", whole seconds; it then sleeps what is left of 30 s, so a run waiting for another's end is "
        "created up to one evaluation plus 30 s after it):",
        "",
        *lines,
        "",
    ]


def goal_lines(results: dict[str, ModeResult], target_days: int) -> list[str]:
    """The issue's two ratios, where both sides were measured: the chosen policy against the bare PySpark job over
    the same days (goal: at most 1.5), and one run per partition, extrapolated to those days, against the policy
    (goal: at least 10)."""
    # A mode with problems (a failed run, wrong rows) measured something else: no ratio from it.
    policy, spark, per_partition = (
        r if r is not None and not r.problems else None
        for r in (results.get(POLICY), results.get(SPARK), results.get(PER_PARTITION))
    )
    rows = []
    if policy is not None and spark is not None and policy.days == spark.days:
        rows.append(
            [
                f"chosen policy / bare PySpark job, {len(policy.days)} days",
                f"{policy.wall_s:,.0f} / {spark.wall_s:,.0f}",
                f"**{policy.wall_s / spark.wall_s:.2f}**",
                "at most 1.5",
            ]
        )
    if policy is not None and per_partition is not None and len(policy.days) == target_days:
        per_day = per_partition.wall_s / len(per_partition.days)
        rows.append(
            [
                f"one run per partition (extrapolated from {len(per_partition.days)} days) / chosen policy, "
                f"{target_days} days",
                f"~{per_day * target_days:,.0f} / {policy.wall_s:,.0f}",
                f"**{per_day * target_days / policy.wall_s:.1f}**",
                "at least 10",
            ]
        )
    if not rows:
        return []
    return [table(["ratio", "wall s", "ratio", "goal"], rows), ""]


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
        f"## Backfill: {target_days} business days from landing to reporting, four ways",
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
        f"sensor runs. The lending assets' `BackfillPolicy` ({policy_text()}) groups up to "
        f"{BACKFILL.max_partitions_per_run} days per run, {DAY_CHAIN_BACKFILL.max_partitions_per_run} for the day "
        "chains (the raw load, the loan book).",
        "- **one run per partition**: the same, with the lending assets' BackfillPolicy removed, which makes "
        "Dagster's asset backfill launch one run per partition (its default). Measured on the first days only, "
        "next to the chosen policy on the same days; the full range is extrapolated.",
        "- **single in-process run of the same code**: `dg.materialize(lending_assets, tags={range start/end})` "
        "on an ephemeral instance in the benchmark's own process: one run, one Spark session, the same asset code "
        "and local resources, the same write-audit-publish commits and audits. No daemon, no run worker, no queue.",
        f"- **bare PySpark job**: `benchmarks/bare_backfill.py` in a fresh process: one Spark session (driver "
        f"memory {BARE_DRIVER_MEMORY}), the landing drops read by Spark, then every table's own transform "
        "(`LakeDataset.transform`) on what its declared inputs select, in chunks of "
        f"{BACKFILL.max_partitions_per_run} days, into plain Parquet folders. No Dagster run, no Iceberg, no "
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
        *evaluation_lines(modes),
        *goal_lines(results, target_days),
        *table_seconds_lines(results),
        "Checks, per mode: every run succeeded, every day of every lending asset was materialized exactly once "
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
