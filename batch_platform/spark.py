"""The Spark resource: one SparkSession per run process, created on first use and shared by its steps."""

from __future__ import annotations

import os
import shutil
from typing import Any

from dagster_pyspark import LazyPySparkResource
from pydantic import Field
from pyspark.sql import SparkSession

from batch_platform.lake.errors import JavaNotFoundError

# Settings the lake's write path depends on, whatever the profile: Iceberg refuses INT96 timestamps, and a fixed
# session time zone keeps date arithmetic independent of the machine's.
REQUIRED_SPARK_CONFIG: dict[str, str] = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "static",
}

LOCAL_SPARK_CONFIG: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.app.name": "batch_platform",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "2g",
    "spark.sql.adaptive.enabled": "true",
}


def ensure_java() -> str:
    """Path of the java binary Spark will start, or a clear error if there is none."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not candidate or not os.path.exists(candidate):
        raise JavaNotFoundError(
            "Spark needs Java 17 or newer and none was found (no JAVA_HOME, no java on PATH). Install a JDK, e.g. "
            "`apt-get install openjdk-17-jre-headless`, or set JAVA_HOME."
        )
    return candidate


class SparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session with the platform's defaults: ``local[*]`` unless configured otherwise.

    The production profile (a ``k8s://`` master, image, S3A settings) is passed as ``spark_config`` by
    ``resources/``; the settings in REQUIRED_SPARK_CONFIG always apply on top.
    """

    spark_config: dict[str, Any] = Field(default_factory=lambda: dict(LOCAL_SPARK_CONFIG))

    def _init_session(self) -> None:
        if self._spark_session is None:
            ensure_java()
            builder = SparkSession.builder
            for key, value in {**self.spark_config, **REQUIRED_SPARK_CONFIG}.items():
                builder = builder.config(key, str(value))
            self._spark_session = builder.getOrCreate()

    @property
    def session(self) -> SparkSession:
        return self.spark_session
