"""Benchmark: the lake's Spark write of one daily partition against a plain Spark Parquet write of the same rows.

For each row count it measures, ``--repeat`` times:

- raw: ``conform(df).write.parquet(tmp)`` with the table's codec, the same conform/cast the lake applies, so both
  do equal work;
- lake: ``IcebergLakeResource.stage_spark`` then ``commit_staged`` (exactly what ``write_spark`` does), timed apart;
- the peak RSS of this Python process (the pyiceberg driver) and of the Spark JVM (its child in local mode),
  sampled in a background thread;
- the CPU seconds of both processes and Spark's task metrics (task CPU, execution memory, spill) of each write,
  steadier than wall-clock time when other work shares the machine.

It prints a table of medians and rewrites this benchmark's section (between its markers) of ``--output``.
Run from the repository root: ``.venv/bin/python -m benchmarks.lake_write --rows 1000000 5000000 --repeat 3``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pyiceberg
import pyspark
from py4j.protocol import Py4JError
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.spark_io import conform
from batch_platform.spark import SparkResource
from benchmarks.markdown import update_section
from benchmarks.runs import rss_mib

MARKER_START = "<!-- lake_write:start -->"
MARKER_END = "<!-- lake_write:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
TARGET_RATIO = 1.15
SAMPLE_INTERVAL_S = 0.05
WARMUP_ROWS = 1_000_000
DAY = date(2024, 1, 15)
_CHANNELS = ["direct_debit", "bank_transfer", "card", "cash", "wallet"]
_MICROS_PER_DAY = 86_400_000_000

TABLE = LakeTable(
    namespace="bench",
    name="loan_payments",
    description="Synthetic loan payments for the lake write benchmark.",
    partition_column="business_date",
    schema=pa.schema(
        [
            pa.field("business_date", pa.date32(), nullable=False),
            pa.field("payment_id", pa.string(), nullable=False),
            pa.field("loan_id", pa.string(), nullable=False),
            pa.field("customer_id", pa.int64(), nullable=False),
            pa.field("amount", pa.decimal128(18, 2), nullable=False),
            pa.field("booked_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("channel", pa.string()),
        ]
    ),
)


# -- data --------------------------------------------------------------------------------------------------------


def _hash(salt: int, modulus: int) -> Column:
    """A deterministic pseudo-random long in [0, modulus) per row, different per salt."""
    return F.pmod(F.xxhash64(F.col("id"), F.lit(salt)), F.lit(modulus))


def generate(spark: SparkSession, rows: int, day: date = DAY) -> DataFrame:
    """One day of payments, computed on the executors from ``spark.range``: the driver never holds the rows.

    The partition column is derived from each row's timestamp, as in real data. A literal date would be constant
    folded and Spark would then drop the sort that partitionBy needs, which real writes pay.
    """
    day_start_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000
    booked_at = F.timestamp_micros(F.lit(day_start_us) + _hash(5, _MICROS_PER_DAY))
    return spark.range(rows).select(
        F.to_date(booked_at).alias("business_date"),
        F.concat(F.lit(f"PAY{day:%Y%m%d}-"), F.lpad(F.col("id").cast("string"), 10, "0")).alias("payment_id"),
        F.concat(F.lit("LN"), F.lpad(_hash(1, 2_000_000).cast("string"), 8, "0")).alias("loan_id"),
        _hash(2, 1_500_000).alias("customer_id"),
        (_hash(3, 500_000) / 100 + 1).cast("decimal(18,2)").alias("amount"),
        booked_at.alias("booked_at"),
        F.element_at(F.array(*[F.lit(c) for c in _CHANNELS]), _hash(4, len(_CHANNELS)).cast("int") + 1).alias(
            "channel"
        ),
    )


# -- monitoring --------------------------------------------------------------------------------------------------


def find_jvm() -> psutil.Process | None:
    """The Spark JVM: in local mode PySpark starts it as a child of this process."""
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "java":
                return child
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return None


def _cpu_s(process: psutil.Process | None) -> float | None:
    if process is None:
        return None
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


@dataclass(frozen=True)
class TaskMetrics:
    """Spark's own metrics of the stages one write ran, summed over their tasks."""

    cpu_s: float
    execution_mb: float  # peak execution memory (sort buffers, hash maps); with local[2] two tasks hold it at once
    spilled_mb: float


class SparkStages:
    """Reads task metrics from the driver's status store.

    RSS cannot show what one write costs the JVM: the heap, once grown, is kept, so JVM RSS is a high-water mark
    of everything run before. Execution memory is per write. The store is internal API: any failure gives None.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._context = spark.sparkContext._jsc.sc()

    def stages(self) -> dict[int, Any] | None:
        try:
            store = self._context.statusStore()
            found = store.stageList(None, False, False, getattr(store, "stageList$default$4")(), None)
            return {found.apply(i).stageId(): found.apply(i) for i in range(found.size())}
        except Py4JError:
            return None

    def since(self, before: dict[int, Any] | None) -> TaskMetrics | None:
        if before is None:
            return None
        try:
            self._context.listenerBus().waitUntilEmpty()  # stage metrics arrive through the listener bus
        except Py4JError:
            time.sleep(0.5)
        now = self.stages()
        if now is None:
            return None
        new = [stage for stage_id, stage in now.items() if stage_id not in before]
        return TaskMetrics(
            cpu_s=sum(s.executorCpuTime() for s in new) / 1e9,
            execution_mb=sum(s.peakExecutionMemory() for s in new) / 2**20,
            spilled_mb=sum(s.diskBytesSpilled() for s in new) / 2**20,
        )


@dataclass(frozen=True)
class Probes:
    jvm: psutil.Process | None
    stages: SparkStages


class Monitor:
    """Over a block: peak RSS (sampled every ~50 ms in a thread) and CPU seconds of this process and of the JVM,
    and Spark's task metrics of the stages the block ran.

    CPU seconds are the steadier comparison on a shared machine: other processes stretch wall-clock time, much
    less the CPU time the write itself burns.
    """

    def __init__(self, probes: Probes, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._python = psutil.Process()
        self._jvm = probes.jvm
        self._stages = probes.stages
        self._stages_before: dict[int, Any] | None = None
        self.tasks: TaskMetrics | None = None
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._cpu_start: tuple[float | None, float | None] = (None, None)
        self.python_mb = 0.0
        self.jvm_mb: float | None = None
        self.python_cpu_s = 0.0
        self.jvm_cpu_s: float | None = None

    def _sample(self) -> None:
        self.python_mb = max(self.python_mb, rss_mib(self._python) or 0.0)
        jvm = rss_mib(self._jvm)
        if jvm is not None:
            self.jvm_mb = max(self.jvm_mb or 0.0, jvm)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> Monitor:
        self._stages_before = self._stages.stages()
        self._sample()
        self._cpu_start = (_cpu_s(self._python), _cpu_s(self._jvm))
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        python_end, jvm_end = _cpu_s(self._python), _cpu_s(self._jvm)
        self._stop.set()
        self._thread.join()
        self._sample()  # a block shorter than the interval still gets a sample at each end
        python_start, jvm_start = self._cpu_start
        if python_start is not None and python_end is not None:
            self.python_cpu_s = python_end - python_start
        if jvm_start is not None and jvm_end is not None:
            self.jvm_cpu_s = jvm_end - jvm_start
        self.tasks = self._stages.since(self._stages_before)


# -- measurements ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One write: raw (commit_s is 0) or lake."""

    stage_s: float
    commit_s: float
    files: int
    rows: int
    bytes: int
    python_mb: float
    jvm_mb: float | None
    python_cpu_s: float
    jvm_cpu_s: float | None
    tasks: TaskMetrics | None

    @property
    def total_s(self) -> float:
        return self.stage_s + self.commit_s


def run_raw(spark: SparkSession, rows: int, scratch: Path, probes: Probes) -> Run:
    target = scratch / f"raw-{uuid.uuid4().hex}"
    df = conform(generate(spark, rows), TABLE)
    with Monitor(probes) as monitor:
        start = time.perf_counter()
        # The same codec the lake stages with (the table's write.parquet.compression-codec), so only the lake's
        # own work differs.
        codec = TABLE.table_properties.get("write.parquet.compression-codec", "zstd")
        df.write.option("compression", codec).parquet(target.as_uri())
        seconds = time.perf_counter() - start
    files = sorted(target.rglob("*.parquet"))
    # Footers only: proves both paths wrote the same rows without reading the data back.
    written_rows = sum(pq.read_metadata(f).num_rows for f in files)
    written_bytes = sum(f.stat().st_size for f in files)
    shutil.rmtree(target)  # outside the timing; keeps disk use flat over the repeats
    return Run(
        seconds,
        0.0,
        len(files),
        written_rows,
        written_bytes,
        monitor.python_mb,
        monitor.jvm_mb,
        monitor.python_cpu_s,
        monitor.jvm_cpu_s,
        monitor.tasks,
    )


def run_lake(spark: SparkSession, lake: IcebergLakeResource, rows: int, probes: Probes) -> Run:
    keys = [DAY.isoformat()]
    lineage = Lineage(run_id=f"bench-{uuid.uuid4().hex}", asset_key="bench/loan_payments", partition_keys=(keys[0],))
    df = generate(spark, rows)
    with Monitor(probes) as monitor:
        start = time.perf_counter()
        write_id, staged = lake.stage_spark(spark, TABLE, df, partition_keys=keys, lineage=lineage)
        staged_at = time.perf_counter()
        result = lake.commit_staged(TABLE, write_id, staged, partition_keys=keys, lineage=lineage)
        done = time.perf_counter()
    return Run(
        staged_at - start,
        done - staged_at,
        result.files,
        result.rows,
        result.bytes,
        monitor.python_mb,
        monitor.jvm_mb,
        monitor.python_cpu_s,
        monitor.jvm_cpu_s,
        monitor.tasks,
    )


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def cell(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def _peak(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


@dataclass(frozen=True)
class Result:
    rows: int
    raw: list[Run]
    lake: list[Run]
    jvm_before_mb: float | None
    load_before: float
    load_after: float

    @property
    def raw_s(self) -> Spread:
        return Spread.of([r.total_s for r in self.raw])

    @property
    def stage_s(self) -> Spread:
        return Spread.of([r.stage_s for r in self.lake])

    @property
    def commit_s(self) -> Spread:
        return Spread.of([r.commit_s for r in self.lake])

    @property
    def lake_s(self) -> Spread:
        return Spread.of([r.total_s for r in self.lake])

    @property
    def ratio(self) -> float:
        return self.lake_s.median / self.raw_s.median

    @property
    def ratio_per_repeat(self) -> Spread:
        # Raw and lake of one repeat ran back to back, under about the same machine conditions.
        return Spread.of([lake.total_s / raw.total_s for raw, lake in zip(self.raw, self.lake, strict=True)])

    @staticmethod
    def _cpu(runs: Sequence[Run]) -> Spread | None:
        values = [r.jvm_cpu_s + r.python_cpu_s for r in runs if r.jvm_cpu_s is not None]
        return Spread.of(values) if values else None

    @property
    def raw_cpu_s(self) -> Spread | None:
        return self._cpu(self.raw)

    @property
    def lake_cpu_s(self) -> Spread | None:
        return self._cpu(self.lake)

    @property
    def cpu_ratio(self) -> float | None:
        raw, lake = self.raw_cpu_s, self.lake_cpu_s
        return lake.median / raw.median if raw is not None and lake is not None and raw.median else None


def measure(
    spark: SparkSession, lake: IcebergLakeResource, rows: int, repeat: int, scratch: Path, probes: Probes
) -> Result:
    jvm_before = rss_mib(probes.jvm)
    load_before = os.getloadavg()[0]
    raws: list[Run] = []
    lakes: list[Run] = []
    for i in range(repeat):
        # Alternate which goes first, so drift (JIT, page cache, heap growth) does not favour one side.
        if i % 2 == 0:
            raws.append(run_raw(spark, rows, scratch, probes))
            lakes.append(run_lake(spark, lake, rows, probes))
        else:
            lakes.append(run_lake(spark, lake, rows, probes))
            raws.append(run_raw(spark, rows, scratch, probes))
        if raws[-1].rows != rows or lakes[-1].rows != rows:
            raise RuntimeError(f"expected {rows} rows; raw wrote {raws[-1].rows}, lake committed {lakes[-1].rows}")
        print(
            f"  rows={rows} repeat {i + 1}/{repeat}: raw {raws[-1].total_s:.2f}s, lake stage "
            f"{lakes[-1].stage_s:.2f}s + commit {lakes[-1].commit_s:.2f}s (load {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
            flush=True,
        )
    return Result(rows, raws, lakes, jvm_before, load_before, os.getloadavg()[0])


# -- reporting ---------------------------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


COLUMNS = [
    "rows",
    "raw write s",
    "lake stage s",
    "lake commit s",
    "lake total s",
    "ratio lake/raw",
    "python peak MB",
    "JVM peak MB",
]


def _row(result: Result, markdown: bool) -> list[str]:
    def fmt(spread: Spread) -> str:
        return spread.cell() if markdown else f"{spread.median:.2f}"

    ratio = f"{result.ratio:.2f}"
    if markdown:
        per_repeat = result.ratio_per_repeat
        ratio += f" ({per_repeat.low:.2f}-{per_repeat.high:.2f})"
    return [
        f"{result.rows:,}",
        fmt(result.raw_s),
        fmt(result.stage_s),
        fmt(result.commit_s),
        fmt(result.lake_s),
        ratio,
        _mb(_peak([r.python_mb for r in result.lake])),
        _mb(_peak([r.jvm_mb for r in result.lake])),
    ]


def text_table(results: Sequence[Result]) -> str:
    """Plain text table of medians, for the terminal."""
    rows = [COLUMNS, *[_row(r, markdown=False) for r in results]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _task_pair(result: Result, metric: str, digits: int = 0) -> str:
    """'raw / lake' medians of one task metric."""

    def median(runs: Sequence[Run]) -> str:
        known = [getattr(r.tasks, metric) for r in runs if r.tasks is not None]
        return f"{statistics.median(known):.{digits}f}" if known else "n/a"

    return f"{median(result.raw)} / {median(result.lake)}"


def _details_row(r: Result) -> str:
    raw_cpu, lake_cpu, cpu_ratio = r.raw_cpu_s, r.lake_cpu_s, r.cpu_ratio
    cells = [
        f"{r.rows:,}",
        f"{r.raw[0].files} / {r.lake[0].files}",
        f"{r.raw[0].bytes / 2**20:.1f} / {r.lake[0].bytes / 2**20:.1f}",
        f"{raw_cpu.cell(1) if raw_cpu else 'n/a'} / {lake_cpu.cell(1) if lake_cpu else 'n/a'}",
        f"{cpu_ratio:.2f}" if cpu_ratio is not None else "n/a",
        _task_pair(r, "cpu_s", digits=1),
        _task_pair(r, "execution_mb"),
        _task_pair(r, "spilled_mb"),
        f"{_mb(_peak([x.python_mb for x in r.raw]))} / {_mb(_peak([x.python_mb for x in r.lake]))}",
        f"{_mb(_peak([x.jvm_mb for x in r.raw]))} / {_mb(_peak([x.jvm_mb for x in r.lake]))}",
        _mb(r.jvm_before_mb),
        f"{r.load_before:.1f} / {r.load_after:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def markdown_section(results: Sequence[Result], repeat: int, env: dict[str, str], jvm_idle_mb: float | None) -> str:
    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_row(r, markdown=True)) + " |" for r in results]
    notes = []
    for r in results:
        met = "meets" if r.ratio <= TARGET_RATIO else "misses"
        cpu = f" (CPU seconds: {r.cpu_ratio:.2f})" if r.cpu_ratio is not None else ""
        notes.append(f"{r.rows:,} rows: lake/raw {r.ratio:.2f}{cpu}, {met} the {TARGET_RATIO:.2f}x target.")
    first, last = results[0], results[-1]
    if len(results) > 1:
        notes.append(
            f"From {first.rows:,} to {last.rows:,} rows ({last.rows / first.rows:.0f}x), the Python peak RSS went "
            f"{_mb(_peak([x.python_mb for x in first.lake]))} -> {_mb(_peak([x.python_mb for x in last.lake]))} MB, "
            f"the JVM peak RSS {_mb(_peak([x.jvm_mb for x in first.lake]))} -> "
            f"{_mb(_peak([x.jvm_mb for x in last.lake]))} MB."
        )
    cpus = os.cpu_count() or 1
    load = max(max(r.load_before, r.load_after) for r in results)
    # The benchmark alone keeps every core busy (local[*]); a load well above that is other work on the machine.
    if load > cpus + 1:
        notes.append(
            f"The 1-minute load average reached {load:.1f} on {cpus} CPUs, of which this benchmark accounts for "
            f"about {cpus}: other work shared the machine, so wall-clock times are noisier than the CPU seconds."
        )
    return "\n".join(
        [
            MARKER_START,
            "## Lake write: one daily partition, Spark -> staged Parquet -> pyiceberg add_files",
            "",
            "Generated by `benchmarks/lake_write.py`; re-running it replaces this section (between the markers).",
            "",
            f"Reproduce: `.venv/bin/python -m benchmarks.lake_write --rows {' '.join(str(r.rows) for r in results)} "
            f"--repeat {repeat}`",
            "",
            "What is measured, for one daily partition of a 7-column table (date partition column, two string ids, "
            "int64, decimal(18,2), timestamp with time zone, string category):",
            "",
            "- **raw write**: `conform(df, table).write.parquet(tmp)` with the table's codec (zstd), the lake's own "
            "select/cast, no partitioning.",
            "- **lake stage**: `IcebergLakeResource.stage_spark` (table load/evolve check, Parquet of a one-day write "
            "written straight into its partition folder, staged files listed).",
            "- **lake commit**: `IcebergLakeResource.commit_staged` (NOT NULL and partition-value checks from the "
            "staged files' footers, "
            "then one transaction: delete the partition, `add_files` of the staged files). Every measured write "
            "replaces an existing partition, as a re-run does.",
            "- **peak MB**: peak RSS during the lake write (stage + commit), sampled every "
            f"{SAMPLE_INTERVAL_S * 1000:.0f} ms, maximum over the repeats. Python is the pyiceberg driver; the JVM "
            "is Spark's driver, which in local mode also runs the tasks (heap capped by `spark.driver.memory`).",
            "",
            "The rows are generated on the executors from `spark.range` + hash expressions, regenerated "
            "deterministically for every write (no cache): raw and lake runs pay the same generation cost and write "
            "identical rows. The partition date is derived from each row's timestamp rather than a literal, as in "
            "real data (Spark removes the partitionBy sort for a constant-folded literal). Spark was warmed up once "
            f"({WARMUP_ROWS:,} rows, raw and lake) before measuring; raw and lake alternate which runs first. "
            f"Times are the median of {repeat} runs, (min-max) in brackets; the ratio is median lake total / "
            "median raw, (min-max of the per-repeat ratios).",
            "",
            header,
            rule,
            *body,
            "",
            "Work and memory, raw / lake. CPU s: Python + JVM process CPU seconds (includes GC and JIT threads), "
            "median (min-max); CPU ratio: lake / raw medians. Task CPU s, execution MB, spilled MB: Spark's task "
            "metrics of the write's stages, medians, summed over tasks (execution memory is what sorts and "
            "aggregations hold; with local[2] two tasks hold theirs at once). Peak MB: maximum over the repeats. "
            "JVM RSS is a high-water mark: the JVM keeps heap it has grown, so a run inherits the peaks of the runs "
            "before it and the raw and lake JVM peaks are not independent. Load: 1-minute load average before / "
            "after this size.",
            "",
            "| rows | files | MiB written | CPU s | CPU ratio | task CPU s | execution MB | spilled MB "
            "| Python peak MB | JVM peak MB | JVM RSS before | load |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *[_details_row(r) for r in results],
            "",
            f"JVM RSS after the warm-up: {_mb(jvm_idle_mb)} MB.",
            "",
            *[f"- {n}" for n in notes],
            "",
            "Environment:",
            "",
            *[f"- {k}: {v}" for k, v in env.items()],
            MARKER_END,
        ]
    )


def environment(spark: SparkSession) -> dict[str, str]:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext.getConf()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.system()}",
        "versions": f"Python {platform.python_version()}, pyspark {pyspark.__version__}, pyiceberg "
        f"{pyiceberg.__version__}, pyarrow {pa.__version__}, Java {jvm.System.getProperty('java.version')}",
        "spark": f"master {conf.get('spark.master')}, default parallelism {spark.sparkContext.defaultParallelism}, "
        f"driver memory {conf.get('spark.driver.memory', '1g')}",
        "catalog": "SQLite catalog and file warehouse in a temporary folder (IcebergLakeResource defaults)",
    }


# -- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000], help="rows per partition")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per row count (median reported)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write the section to")
    args = parser.parse_args(argv)
    if args.repeat < 1 or any(r < 1 for r in args.rows):
        parser.error("--rows and --repeat must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    spark = SparkResource().session
    probes = Probes(jvm=find_jvm(), stages=SparkStages(spark))
    if probes.jvm is None:
        print("warning: no Spark JVM child process found; JVM memory is not reported", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix="lake_write_bench_"))
    try:
        lake = IcebergLakeResource(data_dir=str(scratch / "lake"))
        print("warming up Spark and the catalog", file=sys.stderr, flush=True)
        # Also creates the table and the partition, so every measured lake write is a steady-state replace.
        run_raw(spark, WARMUP_ROWS, scratch, probes)
        run_lake(spark, lake, WARMUP_ROWS, probes)
        jvm_idle = rss_mib(probes.jvm)
        results = [measure(spark, lake, rows, args.repeat, scratch, probes) for rows in args.rows]
        env = environment(spark)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(text_table(results))
    update_section(args.output, markdown_section(results, args.repeat, env, jvm_idle), MARKER_START, MARKER_END)
    print(f"\nwrote the lake_write section of {args.output}", file=sys.stderr)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
