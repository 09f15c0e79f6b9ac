"""The bare PySpark job benchmarks/backfill.py compares a platform backfill with: the loan domain's transforms from
landing to reporting over a date range, in one process and one Spark session, into plain Parquet.

    .venv/bin/python -m benchmarks.bare_backfill --landing DIR --output DIR --first DAY --last DAY [--chunk-days 23]

No Dagster run, no daemon, no Iceberg, no audit, no write-audit-publish: each table is a folder of Parquet files
partitioned by business date, each chunk of days replacing its own partitions. Raw is the landing drops read by
Spark and cast to the raw table's columns (the platform's raw load also checks every row against the landing
contract and quarantines the bad ones; the simulator's default drops have none, which the benchmark checks by
comparing rows per table and day). Every other table is the domain's own transform (``LakeDataset.transform``),
given what its declared inputs select for the chunk's days, read from the Parquet folders: the same tables, by
construction, as the platform writes. What this job leaves out is exactly what the platform adds around them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from assets.lending.contract import DATASETS
from assets.lending.core import CORE_DATASETS
from assets.lending.dataset_specs import LENDING_SPEC_DATASETS
from assets.lending.landing import drop_prefix
from assets.lending.reporting import REPORTING_DATASETS
from assets.lending.tables import LENDING_PARTITIONS, PARTITION, RAW_TABLES
from batch_platform.datasets import LakeDataset, Step, run_transform
from batch_platform.inputs import PartitionSelection
from batch_platform.lake.selection import spark_filter
from batch_platform.lake.spark_io import conform, spark_schema
from batch_platform.lake.tables import LakeTable
from batch_platform.pii import PiiTokenizer
from batch_platform.spark import LOCAL_SPARK_CONFIG

# In dependency order: each reads only tables written before it (the book reads its own previous day).
DATASETS_IN_ORDER: list[LakeDataset] = [*CORE_DATASETS, *REPORTING_DATASETS, *LENDING_SPEC_DATASETS]
# The largest compute profile among these steps ("medium": the book and the portfolio): one session for all.
DRIVER_MEMORY = "4g"
DROP_DAY = PARTITION + r"=([0-9]{4}-[0-9]{2}-[0-9]{2})/"  # in a landing file's path


class ParquetLake:
    """Tables as Parquet folders under ``root``, one per table, partitioned by business date."""

    def __init__(self, spark: SparkSession, root: Path) -> None:
        self.spark = spark
        self.root = root

    def folder(self, table: LakeTable) -> Path:
        return self.root / table.identifier

    def read(self, table: LakeTable, selection: PartitionSelection) -> DataFrame:
        """The selected days of a table (keys, a key range, or all of it), with the table's declared columns."""
        folder = self.folder(table)
        declared = spark_schema(table.schema)
        if selection == [] or not folder.exists():
            return self.spark.createDataFrame([], declared)
        # Written through conform, so the files have the declared types (an empty chunk leaves no file to infer from).
        rows = self.spark.read.schema(declared).option("basePath", str(folder)).parquet(str(folder))
        wanted = spark_filter(table, selection)
        return conform(rows if wanted is None else rows.where(wanted), table)

    def write(self, table: LakeTable, rows: DataFrame) -> None:
        """Replace the partitions ``rows`` holds (Spark's dynamic partition overwrite), nothing else."""
        (
            conform(rows, table)
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy(PARTITION)
            .parquet(str(self.folder(table)))
        )


def load_raw(lake: ParquetLake, landing: Path, days: Sequence[str]) -> None:
    """Every landing dataset's drops of ``days`` (version 1), one Spark read per dataset, cast to the raw table's
    columns; the business date comes from each file's drop folder."""
    for dataset in DATASETS:
        paths = [str(landing / drop_prefix(date.fromisoformat(day), 1) / f"{dataset}.parquet") for day in days]
        rows = (
            lake.spark.read.parquet(*paths)
            .withColumn(PARTITION, F.regexp_extract(F.input_file_name(), DROP_DAY, 1).cast("date"))
            .withColumn("drop_version", F.lit(1))
        )
        lake.write(RAW_TABLES[dataset], rows)


def build(lake: ParquetLake, dataset: LakeDataset, keys: Sequence[str], pii: PiiTokenizer) -> None:
    """One dataset for one chunk of days: what its declared inputs select, its transform, the chunk's partitions."""
    frames = {
        declared.key: lake.read(declared.table, declared.selection(dataset.table, dataset.partitions_def, keys))
        for declared in dataset.inputs
    }
    step = Step(partition_keys=list(keys), session=lake.spark, resources=SimpleNamespace(pii=pii))
    lake.write(dataset.table, run_transform(dataset, frames, step))


def chunks(days: Sequence[str], size: int) -> list[list[str]]:
    return [list(days[i : i + size]) for i in range(0, len(days), size)]


def session() -> SparkSession:
    builder = SparkSession.builder
    for key, value in {**LOCAL_SPARK_CONFIG, "spark.app.name": "bare_backfill"}.items():
        builder = builder.config(key, value)
    spark = (
        builder.config("spark.driver.memory", DRIVER_MEMORY)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", type=Path, required=True, help="the landing zone's local root")
    parser.add_argument("--output", type=Path, required=True, help="a folder for the tables (replaced chunk-wise)")
    parser.add_argument("--first", required=True, help="first business day")
    parser.add_argument("--last", required=True, help="last business day")
    parser.add_argument("--chunk-days", type=int, default=23, help="days per Spark job (the platform's policy: 23)")
    parser.add_argument("--pii-key", default="bare-backfill-key-0123456789abcdef", help="HMAC key for PII tokens")
    args = parser.parse_args(argv)
    days = LENDING_PARTITIONS.get_partition_keys_in_range(dg.PartitionKeyRange(args.first, args.last))
    lake = ParquetLake(session(), args.output)
    pii = PiiTokenizer(key=args.pii_key)
    started = time.monotonic()
    load_raw(lake, args.landing, days)
    print(f"raw: {time.monotonic() - started:.1f} s", flush=True)
    for dataset in DATASETS_IN_ORDER:
        began = time.monotonic()
        for keys in chunks(days, args.chunk_days):
            build(lake, dataset, keys, pii)
        print(f"{dataset.table.identifier}: {time.monotonic() - began:.1f} s", flush=True)
    lake.spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
