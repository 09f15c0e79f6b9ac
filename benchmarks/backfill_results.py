"""What benchmarks/backfill.py measures about a mode: its runs' timings, its checks, the rows it wrote; kept in a
JSON file so that modes measured apart can be reported together."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from assets.lending.contract import LENDING_START
from assets.lending.tables import BACKFILL, CORE_LOAN_DAILY_STATUS, DAY_CHAIN_BACKFILL, DAYS_PER_WRITE

STATUS_ASSET = CORE_LOAN_DAILY_STATUS.asset_key.to_user_string()
SEED = 7
FIRST_DAY = date.fromisoformat(LENDING_START)
SELECTION = "group:lending_raw or group:lending_core or group:lending_reporting"

POLICY, POLICY_SMALL, PER_PARTITION, BARE, SPARK = "policy", "policy-small", "per-partition", "bare", "spark"
MODES = (POLICY, POLICY_SMALL, PER_PARTITION, BARE, SPARK)


def policy_text() -> str:
    return (
        f"multi_run(max_partitions_per_run={BACKFILL.max_partitions_per_run}), day chains "
        f"{DAY_CHAIN_BACKFILL.max_partitions_per_run} written {DAYS_PER_WRITE} at a time"
    )


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
    # Seconds per step key (a step materializes one asset, or the raw multi-asset): where a run's time went.
    seconds_by_step: dict[str, float] = field(default_factory=dict)

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
    # The bare PySpark job's own timing of its parts (raw, then each table), from its output.
    phases: dict[str, float] = field(default_factory=dict)
    # Under the daemon: seconds of each of its evaluations of the backfill (from daemon.log).
    backfill_evaluations: list[float] = field(default_factory=list)
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


def seconds_by_table(result: ModeResult) -> dict[str, float]:
    """Seconds per table over the mode: the Dagster steps' (summed over runs; ``core__payments`` is core.payments,
    the raw multi-asset's step is raw) or the bare job's phases."""
    if result.phases:
        return dict(result.phases)
    totals: dict[str, float] = {}
    for run in result.runs:
        for step, seconds in run.seconds_by_step.items():
            name = "raw" if step.startswith("raw") else step.replace("__", ".")
            totals[name] = totals.get(name, 0.0) + seconds
    return totals


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None
