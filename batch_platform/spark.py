"""The Spark resource: one SparkSession per run process, created on first use and shared by its steps."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from batch_platform import spark_jars
from batch_platform.compute import profile_of_tags, spark_conf
from batch_platform.lake.errors import JavaNotFoundError
from batch_platform.lake.resource import IcebergLakeResource
from batch_platform.lake.spark_catalog import spark_catalog_conf
from batch_platform.partitions import partition_keys

# Settings the lake's write path depends on, whatever the profile: Iceberg refuses INT96 timestamps, and a fixed
# session time zone keeps date arithmetic independent of the machine's.
REQUIRED_SPARK_CONFIG: dict[str, str] = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "static",
}

PATH_LISTING_THRESHOLD = "spark.sql.sources.parallelPartitionDiscovery.threshold"
SPARK_DEFAULT_PATH_LISTING_THRESHOLD = "32"

LOCAL_SPARK_CONFIG: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.app.name": "batch_platform",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "2g",
    "spark.sql.adaptive.enabled": "true",
    # A lake read names its Iceberg-planned data files one by one, and above this many paths Spark looks them up in
    # a job of one task per file: 566 days of core/loans took 5.9 s that way in a local step, 1.7 s looked up on the
    # driver, where a local file's status is a stat call (docs/benchmarks.md, "One partition"). On object stores a
    # status is a request: production settings put Spark's default back (resources.prod_spark_config).
    PATH_LISTING_THRESHOLD: "100000",
}


S3A_ENDPOINT = "spark.hadoop.fs.s3a.endpoint"
S3A_PATH_STYLE = "spark.hadoop.fs.s3a.path.style.access"


def with_s3a_endpoint_settings(settings: dict[str, str]) -> dict[str, str]:
    """The settings with what an S3A endpoint override implies, unless set explicitly.

    Behind an endpoint override (MinIO, Ceph, a test server) buckets have no DNS names of their own, so S3A must
    address them by path (the AWS SDK does that by itself only for an IP address); on AWS (no override, or an empty
    one resolved from the environment) virtual-host style stays. An empty endpoint is dropped: S3A then uses the
    region's AWS endpoint.
    """
    endpoint = settings.get(S3A_ENDPOINT)
    if endpoint is None:
        return settings
    derived = {k: v for k, v in settings.items() if k != S3A_ENDPOINT or v}
    if endpoint:
        derived.setdefault(S3A_PATH_STYLE, "true")
    return derived


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


def spark_home_jars() -> Path:
    """Spark's own jars folder: $SPARK_HOME/jars, else pyspark's."""
    import pyspark

    home = os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)
    return Path(home) / "jars"


class SparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session with the platform's defaults: ``local[*]`` unless configured otherwise.

    The production profile (a ``k8s://`` master, image, S3A settings) is passed as ``spark_config`` by
    ``resources/``; the settings in REQUIRED_SPARK_CONFIG always apply on top. ``LakeSparkResource`` (what
    ``resources/`` uses) also starts the session with the lake's Iceberg catalog.
    """

    # str values (not Any) so that Dagster resolves dg.EnvVar values inside the dict.
    spark_config: dict[str, str] = Field(default_factory=lambda: dict(LOCAL_SPARK_CONFIG))
    jar_groups: list[str] = Field(
        default_factory=lambda: ["iceberg"],
        description="groups of batch_platform.spark_jars put on Spark's class path: 'iceberg' (Spark SQL over the "
        "lake), 's3' (S3A). Jars already in Spark's own jars folder (the production image) are not added again.",
    )
    # Set by session_for before the session starts: the step's compute profile settings.
    _step_spark_config: dict[str, str] = PrivateAttr(default_factory=dict)

    def _init_session(self) -> None:
        if self._spark_session is None:
            ensure_java()
            builder = SparkSession.builder
            for key, value in self.session_settings().items():
                builder = builder.config(key, str(value))
            self._spark_session = builder.getOrCreate()

    def session_settings(self) -> dict[str, str]:
        """Everything the session starts with: class path, configured settings, step profile, lake catalog."""
        # Python UDF workers must run this interpreter (and its packages), not whatever python3 is on PATH.
        settings = {
            "spark.pyspark.python": sys.executable,
            **self.jar_settings(),
            **self.spark_config,
            **self._step_spark_config,
            # Last: spark_config cannot point a catalog somewhere else than where the lake writes.
            **self.catalog_settings(),
        }
        return {**with_s3a_endpoint_settings(settings), **REQUIRED_SPARK_CONFIG}

    def catalog_settings(self) -> dict[str, str]:
        """Spark SQL catalogs (``spark.sql.catalog.*``) the session starts with: none here."""
        return {}

    def jar_settings(self) -> dict[str, str]:
        """Class path settings for the jar groups that Spark's own jars folder lacks.

        The driver's and executors' class paths name the files in place: in local mode the executors share the
        driver's JVM, and ``spark.jars`` would copy every jar (the AWS SDK bundle is 640 MB) into each session's
        work folder.
        """
        if not self.jar_groups:
            return {}
        bundled = spark_home_jars()
        paths = [p for p in spark_jars.classpath(self.jar_groups, search=[bundled]) if p.parent != bundled]
        if not paths:
            return {}
        joined = os.pathsep.join(str(p) for p in paths)
        return {"spark.driver.extraClassPath": joined, "spark.executor.extraClassPath": joined}

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


class LakeSparkResource(SparkResource):
    """A SparkResource whose session starts with the lake's Iceberg catalog as Spark catalog ``lake``.

    ``lake`` is the lake resource itself (``resources/`` passes the same object it registers as ``lake``), so Spark
    SQL reads the tables the platform writes, through settings derived from that resource when the run starts
    (its ``dg.EnvVar`` values included): ``SELECT ... FROM lake.core.payments``. Read-only: writes go through the
    lake's assets (``batch_platform.lake.spark_catalog``). A resource with a nested resource is initialised by
    Dagster as a context manager: outside a run use ``process_config_and_initialize_cm`` or ``dg.build_resources``.
    """

    lake: IcebergLakeResource = Field(description="the lake whose catalog the session gets, read-only")

    def catalog_settings(self) -> dict[str, str]:
        if "iceberg" not in self.jar_groups:
            raise ValueError("LakeSparkResource needs jar group 'iceberg' (Iceberg's Spark runtime)")
        return spark_catalog_conf(self.lake)
