"""The Spark resource: one SparkSession per run process, created on first use and shared by its steps."""

from __future__ import annotations

import os
import shutil
import sys

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from batch_platform.compute import profile_of_tags, spark_conf
from batch_platform.lake.errors import JavaNotFoundError
from batch_platform.partitions import partition_keys

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

    # str values (not Any) so that Dagster resolves dg.EnvVar values inside the dict.
    spark_config: dict[str, str] = Field(default_factory=lambda: dict(LOCAL_SPARK_CONFIG))
    # Set by session_for before the session starts: the step's compute profile settings.
    _step_spark_config: dict[str, str] = PrivateAttr(default_factory=dict)

    def _init_session(self) -> None:
        if self._spark_session is None:
            ensure_java()
            builder = SparkSession.builder
            # Python UDF workers must run this interpreter (and its packages), not whatever python3 is on PATH.
            settings = {"spark.pyspark.python": sys.executable, **self.spark_config, **self._step_spark_config}
            for key, value in {**settings, **REQUIRED_SPARK_CONFIG}.items():
                builder = builder.config(key, str(value))
            self._spark_session = builder.getOrCreate()

    @property
    def session(self) -> SparkSession:
        return self.spark_session

    def step_spark_config(self, context: dg.AssetExecutionContext) -> dict[str, str]:
        """Spark settings the step's compute profile asks for (op tag set by ``lake_asset(compute=...)``), with
        executors scaled to the step's partition count; empty for a step without a profile."""
        profile = profile_of_tags(context.op_def.tags)
        if profile is None:
            return {}
        return spark_conf(profile, partitions=max(1, len(partition_keys(context))))

    def session_for(self, context: dg.AssetExecutionContext) -> SparkSession:
        """The session, started with the step's compute profile if this call starts it.

        The profile's settings override ``spark_config``. Spark fixes executor count, cores and memory when its
        context starts, so a step that finds a session already running in its process (in-process executor, an
        earlier step) gets that session unchanged. In local mode Spark ignores the executor settings.
        """
        if self._spark_session is None:
            self._step_spark_config = self.step_spark_config(context)
        return self.session
