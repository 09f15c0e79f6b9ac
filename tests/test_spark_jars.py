"""The pinned Spark jars: versions that match the installed pyspark, checksummed downloads, one fetch per machine."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pyspark
import pytest

from batch_platform import spark_jars
from batch_platform.spark import SparkResource, spark_home_jars
from batch_platform.spark_jars import MavenJar, SparkJarChecksumError, SparkJarsMissing


def _bundled_version(prefix: str) -> str:
    names = [p.name for p in spark_home_jars().glob(f"{prefix}-*.jar")]
    assert len(names) == 1, names
    match = re.fullmatch(rf"{prefix}-(.+)\.jar", names[0])
    assert match is not None
    return match.group(1)


def test_hadoop_aws_is_the_hadoop_version_inside_pyspark() -> None:
    # S3A classes compiled against another Hadoop fail at run time with NoSuchMethodError, not at start.
    (hadoop_aws,) = [jar for jar in spark_jars.S3 if jar.artifact == "hadoop-aws"]
    assert hadoop_aws.version == _bundled_version("hadoop-client-api")


def test_iceberg_runtime_is_built_for_the_installed_spark_minor_version() -> None:
    (runtime,) = [jar for jar in spark_jars.ICEBERG if jar.artifact.startswith("iceberg-spark-runtime-")]
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    scala = _bundled_version("scala-library").rsplit(".", 1)[0]
    assert runtime.artifact == f"iceberg-spark-runtime-{spark_minor}_{scala}"


@pytest.fixture
def fake_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, MavenJar]:
    """A Maven-layout folder served as file:// holding one small jar, pinned as group 'iceberg'."""
    content = b"PK\x03\x04 not really a jar"
    jar = MavenJar("org.example", "tiny", "1.0", hashlib.sha256(content).hexdigest())
    repository = tmp_path / "repository"
    (repository / jar.repository_path).parent.mkdir(parents=True)
    (repository / jar.repository_path).write_bytes(content)
    monkeypatch.setenv(spark_jars.REPOSITORY_ENV, repository.as_uri())
    monkeypatch.setenv(spark_jars.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(spark_jars.GROUPS, "iceberg", (jar,))
    return repository, jar


def test_fetch_downloads_once_and_a_second_fetch_needs_no_repository(fake_repository: tuple[Path, MavenJar]) -> None:
    repository, jar = fake_repository

    (first,) = spark_jars.fetch(["iceberg"], log=False)
    (repository / jar.repository_path).unlink()  # nothing left to download from
    (second,) = spark_jars.fetch(["iceberg"], log=False)

    assert first == second == spark_jars.cache_dir() / "tiny-1.0.jar"
    assert hashlib.sha256(second.read_bytes()).hexdigest() == jar.sha256


def test_fetch_refuses_a_jar_whose_checksum_differs_and_keeps_nothing(
    fake_repository: tuple[Path, MavenJar],
) -> None:
    repository, jar = fake_repository
    (repository / jar.repository_path).write_bytes(b"tampered")

    with pytest.raises(SparkJarChecksumError, match=r"tiny-1\.0\.jar has SHA-256 .* not the pinned"):
        spark_jars.fetch(["iceberg"], log=False)

    assert list(spark_jars.cache_dir().iterdir()) == []


def test_a_missing_jar_names_itself_and_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(spark_jars.CACHE_ENV, str(tmp_path / "empty-cache"))

    with pytest.raises(SparkJarsMissing, match=r"org\.apache\.hadoop:hadoop-aws:.*spark-jars fetch --group s3"):
        SparkResource(jar_groups=["s3"]).jar_settings()


def test_unknown_jar_group_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Spark jar group"):
        spark_jars.jars_of(["s3", "hdfs"])
