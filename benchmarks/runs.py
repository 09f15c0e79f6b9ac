"""The harness the day benchmarks share: sample CPU and memory while Dagster runs execute in-process, then cut each
run's steps into timed parts from its event log (step start and end, materializations, check evaluations).

Used by benchmarks/lending_day.py, loan_book.py and one_partition.py; ``table`` and ``text_table`` format their
results for docs/benchmarks.md and the terminal.
"""

from __future__ import annotations

import bisect
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import psutil

SAMPLE_INTERVAL_S = 0.1
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

# -- monitoring --------------------------------------------------------------------------------------------------


def rss_mib(process: psutil.Process | None) -> float | None:
    """A process's resident memory in MiB; None if it is gone (or was never found)."""
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
        python, jvm = rss_mib(self._me), rss_mib(self.jvm())
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


# -- formatting ------------------------------------------------------------------------------------------------


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
