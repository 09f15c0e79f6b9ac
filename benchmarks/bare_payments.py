"""The bare PySpark job benchmarks/one_partition.py compares a platform run with: no Dagster, no Iceberg, no audits.

    .venv/bin/python -m benchmarks.bare_payments --files LIST --output DIR [--loans LIST] [--driver-memory 2g]

Reads the Parquet files named in LIST (one path a line: a day of raw/payments), turns the cent columns into
decimal(18, 2) money as core/payments does, and writes the rows as Parquet under DIR, partitioned by business date,
replacing what was there. With ``--loans`` (core/loans' data files) it first counts what the platform's three audits
count: duplicate payment ids, amounts that do not split into principal and interest, payments of unknown loans (a
broadcast probe of the loans, as the platform's audit does). It imports nothing of the platform, so its start-up is
a Spark job's alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

MONEY_COLUMNS = ("amount", "principal", "interest")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=Path, required=True, help="a file listing the input Parquet files")
    parser.add_argument("--output", required=True)
    parser.add_argument("--loans", type=Path, help="a file listing core/loans' data files: audit before writing")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--shuffle-partitions", default="8")
    args = parser.parse_args(argv)
    spark = (
        SparkSession.builder.master("local[*]")
        .appName("bare_payments")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", args.driver_memory)
        .config("spark.sql.shuffle.partitions", args.shuffle_partitions)
        .config("spark.sql.adaptive.enabled", "true")
        # The loans' files looked up on the driver, as the platform's local sessions do.
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    rows = spark.read.parquet(*args.files.read_text().split())
    for name in MONEY_COLUMNS:
        rows = rows.withColumn(name, (F.col(f"{name}_cents").cast("decimal(18,0)") / F.lit(100)).cast("decimal(18,2)"))
    if args.loans:
        rows = rows.cache()
        loans = spark.read.parquet(*args.loans.read_text().split()).select("loan_id")
        wanted = F.broadcast(rows.select("loan_id").distinct())
        known = loans.join(wanted, "loan_id", "left_semi").distinct()
        failures = {
            "duplicate payment ids": rows.groupBy("payment_id").count().where("count > 1").count(),
            "amounts not split": rows.where(
                ~(
                    (F.col("amount") == F.col("principal") + F.col("interest"))
                    & (F.col("principal") >= 0)
                    & (F.col("interest") >= 0)
                )
            ).count(),
            "unknown loans": rows.join(known, "loan_id", "left_anti").count(),
        }
        if any(failures.values()):
            raise SystemExit(f"audits failed: {failures}")
    rows.write.mode("overwrite").partitionBy("business_date").parquet(args.output)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
