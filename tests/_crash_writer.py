"""A Spark write that stops between staging and commit, for tests/test_lake_crash_safety.py to SIGKILL.

Run as a script with the project's Python. It stages one partition of the test table through the real Spark path
(``IcebergLakeResource.stage_spark``), prints one marker line with what it staged, then sleeps until it is killed.
The commit half of the write never runs.

With ``--prod`` the lake and Spark are PROD's (``resources.prod_resources``, settings from the environment as a run
pod gets them): Spark starts with PROD's S3A settings in a fresh JVM and stages through ``s3a://``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

# The table declaration lives in the test module, beside the assertions about it.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyspark.sql import functions as F
from test_lake_crash_safety import ASSET_KEY, CRASH_EVENTS, STAGED_MARKER

from batch_platform.lake import IcebergLakeResource, Lineage
from batch_platform.spark import SparkResource
from resources import prod_resources

# One core, one shuffle task and no UI: the test only needs a real executor writing real files.
CRASH_SPARK_CONFIG = {
    "spark.master": "local[1]",
    "spark.app.name": "lake_crash_writer",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "1",
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.memory": "512m",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", help="local lake folder (without --prod)")
    parser.add_argument("--prod", action="store_true", help="PROD's lake and Spark settings, from the environment")
    parser.add_argument("--partition", required=True, help="partition key, YYYY-MM-DD")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)

    held = contextlib.ExitStack()  # initialized resources, held until the process is killed
    if args.prod:
        prod = prod_resources()
        prod_spark = prod["spark"]
        # PROD's settings (S3A included), made small for a test process; EnvVars resolve as at a run's start.
        spark_resource = held.enter_context(
            SparkResource(
                spark_config={**prod_spark.spark_config, **CRASH_SPARK_CONFIG}, jar_groups=prod_spark.jar_groups
            ).process_config_and_initialize_cm()
        )
        lake = prod["lake"].process_config_and_initialize()
    else:
        spark_resource = SparkResource(spark_config=dict(CRASH_SPARK_CONFIG))
        lake = IcebergLakeResource(data_dir=args.data_dir)
    spark = spark_resource.session
    spark.sparkContext.setLogLevel("ERROR")
    day = date.fromisoformat(args.partition)
    df = spark.range(args.rows).select(
        F.lit(day).alias("event_date"),
        F.col("id").alias("event_id"),
        F.lit(args.run_id).alias("writer_run_id"),
        (F.col("id") / 100).alias("amount"),
    )
    write_id, staged = lake.stage_spark(
        spark,
        CRASH_EVENTS,
        df,
        partition_keys=[args.partition],
        lineage=Lineage(run_id=args.run_id, asset_key=ASSET_KEY, partition_keys=(args.partition,)),
    )
    gateway = spark.sparkContext._gateway
    jvm_pid = gateway.proc.pid if gateway is not None and getattr(gateway, "proc", None) is not None else None
    report = {
        "pid": os.getpid(),
        "jvm_pid": jvm_pid,
        "write_id": write_id,
        "staging_uri": staged.staging_uri,
        "files": list(staged.files),
    }
    print(STAGED_MARKER + json.dumps(report), flush=True)
    # Where commit_staged would run. The test kills the process group here.
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
