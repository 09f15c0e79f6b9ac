"""The Java libraries Spark needs beyond pyspark's own jars: one pinned list, fetched once from Maven Central.

The same list serves the tests, a laptop's PROD profile and the production image (``deploy/Dockerfile`` runs
``batch-platform spark-jars fetch --into $SPARK_HOME/jars``). Each jar is pinned by version and SHA-256 and kept in
a cache folder shared by every checkout on the machine, so a second ``make test`` downloads nothing.

Versions follow pyspark's: ``hadoop-aws`` must be exactly the Hadoop inside pyspark (``hadoop-client-api-3.4.2``
in pyspark 4.1.4) with the AWS SDK v2 ``bundle`` and the analytics accelerator that this hadoop-aws declares as
compile dependencies; Iceberg's Spark runtime is built per Spark minor version (it also carries Iceberg's Glue
catalog and S3FileIO, which use the same AWS SDK bundle).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
REPOSITORY_ENV = "BATCH_PLATFORM_MAVEN_REPOSITORY"
CACHE_ENV = "BATCH_PLATFORM_SPARK_JARS_DIR"


@dataclass(frozen=True)
class MavenJar:
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def repository_path(self) -> str:
        return f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


# Spark SQL over the lake: Iceberg's SparkCatalog, and the JDBC drivers of the SQL catalogs the platform writes
# (SQLite locally, PostgreSQL in production).
ICEBERG = (
    MavenJar(
        "org.apache.iceberg",
        "iceberg-spark-runtime-4.1_2.13",
        "1.12.0",
        "3123c3798af642dd537230923548e013ef41cc28b6626e5225808cf5670a0f82",
    ),
    MavenJar(
        "org.xerial",
        "sqlite-jdbc",
        "3.54.1.0",
        "f8dce420a6016278497f4f0560f65602b9db858de141b541cf91a4644ebe4639",
    ),
    MavenJar(
        "org.postgresql",
        "postgresql",
        "42.7.14",
        "73914527305a40cce504b0d3d90b23caf565136912d607ae8ae7c5895512332c",
    ),
)
# S3A (Spark's executors reading and writing s3a://) and the AWS SDK v2 that it and Iceberg's Glue catalog use.
S3 = (
    MavenJar(
        "org.apache.hadoop",
        "hadoop-aws",
        "3.4.2",
        "d2d24e6b715b5656b9d238bf13b6682a07e2004dd36aad74a73aeb854319f4d9",
    ),
    MavenJar(
        "software.amazon.awssdk",
        "bundle",
        "2.29.52",
        "62638f33045690c6bc5e496b54b0b2e89a9ad38cbedacdf6e017fea6bc85f55c",
    ),
    MavenJar(
        "software.amazon.s3.analyticsaccelerator",
        "analyticsaccelerator-s3",
        "1.2.1",
        "11029552e37408e41e689b20150f4b372e0b4f232de321ccafd0fcf443cdfb5a",
    ),
    # Iceberg 1.12's AWS clients (Glue catalog, S3FileIO) need an HTTP client outside the bundle: its "apache" type
    # is now the SDK's Apache 5 client (first released after this bundle), so the Spark catalog uses URLConnection's,
    # in the bundle's version (batch_platform.lake.spark_catalog sets http-client.type).
    MavenJar(
        "software.amazon.awssdk",
        "url-connection-client",
        "2.29.52",
        "c7e3bbe6ca6df0e944ec72b4f6fd529f7d79336b52bf55428a73436153ed8d6e",
    ),
)
GROUPS: dict[str, tuple[MavenJar, ...]] = {"iceberg": ICEBERG, "s3": S3}


class SparkJarsMissing(RuntimeError):
    """A jar the Spark session needs has not been fetched."""


class SparkJarChecksumError(RuntimeError):
    """A downloaded jar is not the pinned one."""


def cache_dir() -> Path:
    """Where fetched jars live: $BATCH_PLATFORM_SPARK_JARS_DIR, else the user's cache folder."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "batch-platform" / "spark-jars"


def jars_of(groups: Iterable[str]) -> list[MavenJar]:
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown Spark jar group(s) {unknown}; known: {sorted(GROUPS)}")
    return [jar for name in GROUPS if name in set(groups) for jar in GROUPS[name]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(groups: Sequence[str], into: Path | None = None, log: bool = True) -> list[Path]:
    """Download the groups' jars that ``into`` (default: the cache) lacks, each checked against its SHA-256.

    A file is renamed into place only once its checksum matches, so an interrupted download never leaves a jar
    that a later run would trust. Jars already present are not checked again (checking 640 MB takes seconds).
    """
    target = into or cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    repository = os.environ.get(REPOSITORY_ENV, MAVEN_CENTRAL).rstrip("/")
    paths = []
    for jar in jars_of(groups):
        path = target / jar.file_name
        if not path.exists():
            url = f"{repository}/{jar.repository_path}"
            if log:
                print(f"spark-jars: fetching {jar.coordinates}", flush=True)
            with tempfile.NamedTemporaryFile(dir=target, prefix=f".{jar.file_name}.", delete=False) as partial:
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        while block := response.read(1 << 20):
                            partial.write(block)
                    partial.close()
                    actual = _sha256(Path(partial.name))
                    if actual != jar.sha256:
                        raise SparkJarChecksumError(
                            f"{url} has SHA-256 {actual}, not the pinned {jar.sha256}: refusing it"
                        )
                    os.replace(partial.name, path)
                finally:
                    if os.path.exists(partial.name):
                        os.unlink(partial.name)
        paths.append(path)
    return paths


def classpath(groups: Sequence[str], search: Sequence[Path] = ()) -> list[Path]:
    """Local paths of the groups' jars, looked up in ``search`` folders and then the cache.

    Raises SparkJarsMissing naming the jars and the command that fetches them.
    """
    folders = [*search, cache_dir()]
    found, missing = [], []
    for jar in jars_of(groups):
        path = next((folder / jar.file_name for folder in folders if (folder / jar.file_name).exists()), None)
        if path is None:
            missing.append(jar.coordinates)
        else:
            found.append(path)
    if missing:
        raise SparkJarsMissing(
            f"Spark needs {', '.join(missing)} (groups {', '.join(groups)}), not found in "
            f"{', '.join(str(f) for f in folders)}. Fetch them with "
            f"`batch-platform spark-jars fetch --group {' --group '.join(groups)}` (what `make setup` does)."
        )
    return found
