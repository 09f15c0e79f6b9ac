"""Benchmark: the lake's Spark write of one daily partition to S3 (through S3A, on a moto server) and to local disk.

The sibling of ``benchmarks/lake_write.py`` (same table, same generated rows, same monitor), for the production
storage path. In one process and one Spark session, for each target (a ``file://`` warehouse, an ``s3://``
warehouse on a moto server in its own process) it measures ``--repeat`` times:

- raw: ``conform(df).write.parquet(<target>)``, a plain Spark write to the same storage;
- lake: ``stage_spark`` + ``commit_staged`` (what ``write_spark`` does), split into phases by timing the lake's own
  functions: catalog (table load and checks), Spark write, listing the staged files, footer checks, commit;
- the CPU seconds of this process (pyiceberg), of the JVM (Spark) and of the moto server;
- S3A's own request counters (the file system's IOStatistics) for the writes to S3.

Both warehouses use a SQLite catalog, so the S3/local ratio is the storage's. Spark has PROD's S3A settings
(``resources.prod_spark_config``) and credentials from the AWS default chain (environment).
Run from the repository root: ``.venv/bin/python -m benchmarks.lake_write_s3 --rows 1000000 --repeat 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import boto3
import psutil
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

import batch_platform.lake.resource as lake_resource
from batch_platform.lake import IcebergLakeResource, Lineage, spark_io
from batch_platform.lake.spark_io import conform, to_spark_uri
from batch_platform.spark import SparkResource
from benchmarks.lake_write import DAY, TABLE, Monitor, Probes, SparkStages, environment, find_jvm, generate
from benchmarks.landing_sensor import _serve_moto
from benchmarks.markdown import update_section
from resources import AWS_REGION_ENV, PROD_SPARK_JAR_GROUPS, S3_ENDPOINT_ENV, prod_spark_config

MARKER_START = "<!-- lake_write_s3:start -->"
MARKER_END = "<!-- lake_write_s3:end -->"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
REGION = "eu-west-1"
BUCKET = "bench-lake"
WARMUP_ROWS = 200_000
PHASES = ("catalog", "spark write", "listing", "footer checks", "commit")
# S3A statistics worth showing (IOStatistics names of hadoop-aws 3.4.2): requests by kind, and renames (a rename is
# a COPY then a DELETE on S3; the copies have a counter but no duration of their own).
S3A_COUNTERS = (
    "object_put_request",
    "action_http_head_request",
    "object_list_request",
    "op_rename",
    "object_copy_requests",
    "object_delete_request",
    "object_bulk_delete_request",
    "object_multipart_initiated",
)


# -- the moto server, in its own process ---------------------------------------------------------------------------


@contextlib.contextmanager
def moto_server() -> Iterator[tuple[str, psutil.Process]]:
    """A moto server process (not under this process's GIL) and its endpoint; its CPU time is measured apart."""
    spawn = multiprocessing.get_context("spawn")
    ports: Queue[int] = spawn.Queue()
    stop = spawn.Event()
    process = spawn.Process(target=_serve_moto, args=(ports, stop), daemon=True)
    process.start()
    try:
        endpoint = f"http://127.0.0.1:{ports.get(timeout=120)}"
        assert process.pid is not None
        yield endpoint, psutil.Process(process.pid)
    finally:
        stop.set()
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()


# -- phases --------------------------------------------------------------------------------------------------------


class PhaseTimer:
    """Seconds spent in the lake's own functions during a write, by wrapping them where the lake calls them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def _timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return wrapper

    @contextlib.contextmanager
    def installed(self) -> Iterator[PhaseTimer]:
        targets = [
            (spark_io, "stage", "stage"),  # Spark write + listing
            (spark_io, "_list_parquet_files", "listing"),
            (spark_io, "check_staged_files", "footer checks"),
            (lake_resource, "commit_replace", "commit"),
        ]
        originals = [(module, name, getattr(module, name)) for module, name, _ in targets]
        for module, name, phase in targets:
            setattr(module, name, self._timed(phase, getattr(module, name)))
        try:
            yield self
        finally:
            for module, name, original in originals:
                setattr(module, name, original)


def s3a_counters(spark: SparkSession, uri: str) -> dict[str, float]:
    """Cumulative requests (``<name>``) and milliseconds spent in them (``<name>.ms``) of the S3A file system that
    serves ``uri`` (cached, one per bucket), from its IOStatistics: counters, and the duration trackers' means."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    fs = jvm.org.apache.hadoop.fs.Path(uri).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    statistics = fs.getIOStatistics()
    counters, means = statistics.counters(), statistics.meanStatistics()
    found: dict[str, float] = {}
    for name in S3A_COUNTERS:
        found[name] = float(counters.get(name) or 0)
        mean = means.get(f"{name}.mean")
        found[f"{name}.ms"] = float(mean.getSum()) if mean is not None else float("nan")
    return found


def stage_seconds(stages: SparkStages, before: dict[int, Any] | None) -> float | None:
    """Wall seconds of the Spark stages run since ``before`` (the tasks; not the driver's job commit after them)."""
    now = stages.stages()
    if before is None or now is None:
        return None
    total = 0.0
    for stage_id, stage in now.items():
        if stage_id in before:
            continue
        submitted, completed = stage.submissionTime(), stage.completionTime()
        if submitted.isDefined() and completed.isDefined():
            total += (completed.get().getTime() - submitted.get().getTime()) / 1000
    return total


# -- measurements --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeRun:
    total_s: float
    phases: dict[str, float]
    rows: int
    files: int
    bytes: int
    cpu_s: dict[str, float]  # python, jvm, moto
    s3a: dict[str, float] = field(default_factory=dict)
    spark_tasks_s: float | None = None


@dataclass(frozen=True)
class RawRun:
    seconds: float
    rows: int


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def run_raw(spark: SparkSession, rows: int, target: str) -> RawRun:
    df = conform(generate(spark, rows), TABLE)
    codec = TABLE.table_properties.get("write.parquet.compression-codec", "zstd")
    start = time.perf_counter()
    df.write.option("compression", codec).parquet(to_spark_uri(target))
    seconds = time.perf_counter() - start
    filesystem: pafs.FileSystem
    if target.startswith("s3://"):  # the footers are read through pyarrow, with the moto endpoint
        filesystem, root = pafs.S3FileSystem(endpoint_override=os.environ[S3_ENDPOINT_ENV], region=REGION), target[5:]
    else:
        filesystem, root = pafs.FileSystem.from_uri(target)
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    parquet = [i.path for i in infos if i.path.endswith(".parquet")]
    written = sum(pq.ParquetFile(filesystem.open_input_file(p)).metadata.num_rows for p in parquet)
    filesystem.delete_dir(root)  # outside the timing
    return RawRun(seconds, written)


def run_lake(
    spark: SparkSession, lake: IcebergLakeResource, rows: int, probes: Probes, moto: psutil.Process | None
) -> LakeRun:
    keys = [DAY.isoformat()]
    lineage = Lineage(run_id=f"bench-{uuid.uuid4().hex}", asset_key="bench/loan_payments", partition_keys=(keys[0],))
    df = generate(spark, rows)
    on_s3 = lake.warehouse_uri().startswith("s3://")
    counters_before = s3a_counters(spark, to_spark_uri(lake.warehouse_uri())) if on_s3 else {}
    moto_before = _cpu(moto)
    stages_before = probes.stages.stages()
    with PhaseTimer().installed() as timer, Monitor(probes) as monitor:
        start = time.perf_counter()
        write_id, staged = lake.stage_spark(spark, TABLE, df, partition_keys=keys, lineage=lineage)
        staged_at = time.perf_counter()
        result = lake.commit_staged(TABLE, write_id, staged, partition_keys=keys, lineage=lineage)
        total = time.perf_counter() - start
    moto_cpu = _cpu(moto) - moto_before
    stage_s = staged_at - start
    seconds = dict(timer.seconds)
    phases = {
        # Loading and checking the table in the catalog, before staging and before committing.
        "catalog": stage_s - seconds["stage"] + (total - stage_s) - seconds["footer checks"] - seconds["commit"],
        "spark write": seconds["stage"] - seconds["listing"],
        "listing": seconds["listing"],
        "footer checks": seconds["footer checks"],
        "commit": seconds["commit"],
    }
    counters = {}
    if on_s3:
        after = s3a_counters(spark, to_spark_uri(lake.warehouse_uri()))
        counters = {name: after[name] - counters_before[name] for name in after}
    return LakeRun(
        total_s=total,
        phases=phases,
        rows=result.rows,
        files=result.files,
        bytes=result.bytes,
        cpu_s={"python": monitor.python_cpu_s, "jvm": monitor.jvm_cpu_s or 0.0, "moto": moto_cpu},
        s3a=counters,
        spark_tasks_s=stage_seconds(probes.stages, stages_before),
    )


@dataclass(frozen=True)
class Target:
    name: str
    warehouse: str
    raw: list[RawRun]
    lake: list[LakeRun]

    def median(self, value: Callable[[LakeRun], float]) -> float:
        return statistics.median(value(r) for r in self.lake)

    @property
    def raw_s(self) -> float:
        return statistics.median(r.seconds for r in self.raw)

    @property
    def lake_s(self) -> float:
        return self.median(lambda r: r.total_s)


def measure(
    spark: SparkSession,
    lakes: dict[str, IcebergLakeResource],
    rows: int,
    repeat: int,
    scratch: dict[str, str],
    probes: Probes,
    moto: psutil.Process,
) -> list[Target]:
    raws: dict[str, list[RawRun]] = {name: [] for name in lakes}
    runs: dict[str, list[LakeRun]] = {name: [] for name in lakes}
    for i in range(repeat):
        # Alternate the order of the targets, so drift (JIT, page cache, heap growth) favours neither.
        for name in list(lakes) if i % 2 == 0 else list(reversed(lakes)):
            raws[name].append(run_raw(spark, rows, f"{scratch[name]}/raw-{uuid.uuid4().hex}"))
            runs[name].append(run_lake(spark, lakes[name], rows, probes, moto if name == "s3" else None))
            if raws[name][-1].rows != rows or runs[name][-1].rows != rows:
                raise RuntimeError(
                    f"{name}: expected {rows} rows, raw {raws[name][-1].rows}, lake {runs[name][-1].rows}"
                )
            last = runs[name][-1]
            print(
                f"  {name} repeat {i + 1}/{repeat}: raw {raws[name][-1].seconds:.2f}s, lake {last.total_s:.2f}s "
                + ", ".join(f"{p} {s:.2f}" for p, s in last.phases.items()),
                file=sys.stderr,
                flush=True,
            )
    return [Target(name, lakes[name].warehouse_uri(), raws[name], runs[name]) for name in lakes]


# -- reporting -----------------------------------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def markdown_section(targets: Sequence[Target], rows: int, repeat: int, env: dict[str, str]) -> str:
    by_name = {t.name: t for t in targets}
    local, s3 = by_name["local"], by_name["s3"]
    times = [
        "| target | raw Spark write s | lake write s | lake/raw | " + " | ".join(PHASES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(PHASES),
    ]
    for t in targets:
        cells = [
            t.name,
            _spread([r.seconds for r in t.raw]),
            _spread([r.total_s for r in t.lake]),
            f"{t.lake_s / t.raw_s:.2f}",
            *[_spread([r.phases[p] for r in t.lake]) for p in PHASES],
        ]
        times.append("| " + " | ".join(cells) + " |")
    cpu = [
        "| target | files | MiB | Spark tasks s | after the tasks s | Python CPU s | JVM CPU s | moto CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        first = t.lake[0]
        tasks = [r.spark_tasks_s for r in t.lake if r.spark_tasks_s is not None]
        after = [r.phases["spark write"] - r.spark_tasks_s for r in t.lake if r.spark_tasks_s is not None]
        cpu.append(
            f"| {t.name} | {first.files} | {first.bytes / 2**20:.1f} | "
            + (f"{_spread(tasks)} | {_spread(after)} | " if tasks else "n/a | n/a | ")
            + " | ".join(_spread([r.cpu_s[k] for r in t.lake]) for k in ("python", "jvm", "moto"))
            + " |"
        )
    requests = ["| S3A request | requests | ms in them (all threads) |", "|---|---:|---:|"]
    for name in S3A_COUNTERS:
        count = statistics.median(r.s3a[name] for r in s3.lake)
        millis = statistics.median(r.s3a[f"{name}.ms"] for r in s3.lake)
        requests.append(f"| {name} | {count:.0f} | {'-' if math.isnan(millis) else f'{millis:.0f}'} |")
    return "\n".join(
        [
            MARKER_START,
            "## Lake write to S3 (S3A, moto) against local disk: one daily partition",
            "",
            "Generated by `benchmarks/lake_write_s3.py`; re-running it replaces this section (between the markers).",
            "",
            f"Reproduce: `.venv/bin/python -m benchmarks.lake_write_s3 --rows {rows} --repeat {repeat}`",
            "",
            f"{rows:,} rows of the `lake_write` table (same generator), one partition, written in one run and one "
            "Spark "
            "session to a `file://` warehouse and to an `s3://` warehouse on a moto server (a separate process on "
            "127.0.0.1) through S3A with PROD's settings (`resources.prod_spark_config`). Both use a SQLite catalog, "
            "so the ratio is the storage's. **raw**: a plain `df.write.parquet` to the same storage; **lake**: "
            "`stage_spark` + `commit_staged`. Phases are timed by wrapping the lake's own functions: catalog (table "
            "load and checks), Spark write (the Spark job, including its output committer's renames), listing the "
            "staged files (Hadoop `listFiles`), footer checks (`check_staged_files`: NOT NULL and partition values "
            "from each file's footer) and commit (`commit_replace`: one pyiceberg transaction, which reads the footers "
            f"again in `add_files` and writes the manifests and metadata). Median of {repeat} runs, (min-max); "
            "targets alternate order.",
            "",
            f"**S3 / local, lake write: {s3.lake_s / local.lake_s:.2f}x** ({s3.lake_s:.2f} s against "
            f"{local.lake_s:.2f} s); plain Spark write: {s3.raw_s / local.raw_s:.2f}x.",
            "",
            *times,
            "",
            "The Spark write split (Spark's status store: wall time of the write's stages, and the rest of the "
            "Spark write, which is job setup and the driver's job commit), files and MiB committed, and CPU seconds "
            "during the lake write (the moto server's own process measured apart):",
            "",
            *cpu,
            "",
            "S3A requests per lake write to S3 and the milliseconds spent in them, summed over the threads that "
            "made them (the file system's IOStatistics, median; pyiceberg's reads and writes through pyarrow are not "
            "counted here):",
            "",
            *requests,
            "",
            "Environment:",
            "",
            *[f"- {k}: {v}" for k, v in env.items()],
            MARKER_END,
        ]
    )


# -- main ----------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the partition")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per target (median reported)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to write the section to")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="lake_write_s3_bench_"))
    with contextlib.ExitStack() as held, moto_server() as (endpoint, moto):
        # Before Spark starts: its JVM reads the AWS default chain's environment once.
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "benchmark",
                "AWS_SECRET_ACCESS_KEY": "benchmark",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true",
                AWS_REGION_ENV: REGION,
                S3_ENDPOINT_ENV: endpoint,
            }
        )
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        # PROD's Spark settings and jars (EnvVars resolved from the variables above), without PROD's catalog.
        prod_spark = SparkResource(spark_config=prod_spark_config(), jar_groups=list(PROD_SPARK_JAR_GROUPS))
        spark_resource = held.enter_context(prod_spark.process_config_and_initialize_cm())
        spark = spark_resource.session
        spark.sparkContext.setLogLevel("ERROR")
        probes = Probes(jvm=find_jvm(), stages=SparkStages(spark))
        try:
            lakes = {
                "local": IcebergLakeResource(data_dir=str(scratch / "local")),
                "s3": IcebergLakeResource(
                    data_dir=str(scratch / "s3"),
                    warehouse=f"s3://{BUCKET}/warehouse",
                    region=REGION,
                    s3_endpoint=endpoint,
                ),
            }
            raw_roots = {"local": (scratch / "raw").as_uri(), "s3": f"s3://{BUCKET}/raw"}
            print("warming up Spark, S3A and the catalogs", file=sys.stderr, flush=True)
            for name, lake in lakes.items():  # also creates the tables: every measured write replaces a partition
                run_raw(spark, WARMUP_ROWS, f"{raw_roots[name]}/warmup")
                run_lake(spark, lake, WARMUP_ROWS, probes, moto if name == "s3" else None)
            load_before = os.getloadavg()[0]
            targets = measure(spark, lakes, args.rows, args.repeat, raw_roots, probes, moto)
            load_after = os.getloadavg()[0]
            env = environment(spark)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        env["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        env["catalog"] = "SQLite catalogs in a temporary folder; warehouses file:// (temporary folder) and s3:// (moto)"
        env["s3"] = "moto server (ThreadedMotoServer, one Python process, in-memory objects) on 127.0.0.1"
        # The benchmark alone keeps about every core busy; more is other work sharing the machine.
        env["load"] = f"1-minute load average {load_before:.1f} before, {load_after:.1f} after the measured writes"
        section = markdown_section(targets, args.rows, args.repeat, env)
        spark.stop()
    for target in targets:
        print(f"{target.name}: raw {target.raw_s:.2f}s, lake {target.lake_s:.2f}s", file=sys.stderr)
    update_section(args.output, section, MARKER_START, MARKER_END)
    print(f"wrote the lake_write_s3 section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
