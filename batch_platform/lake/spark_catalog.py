"""Spark SQL over the lake: Iceberg's own Spark catalog, configured from the same settings pyiceberg writes with.

``spark_catalog_conf(lake)`` derives the ``spark.sql.catalog.<name>.*`` settings from an ``IcebergLakeResource``'s
``catalog_config()``, so Spark's reader and the platform's pyiceberg writer cannot point at different catalogs:

=========  ==============================================  ===============================================
lake       pyiceberg (writes)                              Spark (``org.apache.iceberg.spark.SparkCatalog``)
=========  ==============================================  ===============================================
sql        SqlCatalog, SQLAlchemy ``sqlite:///...`` or     ``type=jdbc``, ``jdbc:sqlite:...`` or
           ``postgresql+psycopg2://...``                   ``jdbc:postgresql://...`` (user/password as
                                                           ``jdbc.user``/``jdbc.password``)
glue       GlueCatalog                                     ``type=glue`` (Iceberg's GlueCatalog)
rest       RestCatalog                                     ``type=rest``
=========  ==============================================  ===============================================

Compatibility of the SQL catalog (pyiceberg 0.12 ``SqlCatalog`` and Iceberg 1.12 ``JdbcCatalog`` share the tables
``iceberg_tables`` and ``iceberg_namespace_properties``):

- Rows are keyed by ``catalog_name``; Java uses the Spark catalog's name there, so the Spark catalog is always
  named ``lake.catalog_name``.
- pyiceberg creates the catalog tables with the ``iceberg_type`` column (Java's schema "V1"). Both libraries detect
  that column by themselves; their ``schema_version`` / ``jdbc.schema-version`` property only decides whether an
  old table *without* it is migrated (``ALTER TABLE``). A read-only Spark must never try that, so it gets ``V0``
  ("do not migrate"), which still runs in V1 mode on a pyiceberg catalog.
- ``jdbc.init-catalog-tables=false``: Java would create the tables without ``iceberg_type`` (V0), and pyiceberg
  would then stay in its v0 mode. pyiceberg owns the catalog's DDL.
- ``cache-enabled=false``: SparkCatalog caches loaded tables for 30 s by default, so a query right after a
  pyiceberg commit would read the previous snapshot.

Spark's catalog is read-only unless asked otherwise: writes belong to the lake's assets (lineage in the snapshot
summary, audits, one writer per table). For the SQL catalogs the JDBC connection itself is opened read-only
(SQLite ``open_mode=1``, PostgreSQL ``readOnly`` in every transaction), so an ``INSERT`` fails at commit and leaves
the table as it was. Glue and REST cannot be made read-only from the client: grant Spark's role read access only.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from pyspark.sql import SparkSession
from sqlalchemy.engine import make_url

from batch_platform.lake.errors import LakeError
from batch_platform.lake.resource import IcebergLakeResource

SPARK_CATALOG_CLASS = "org.apache.iceberg.spark.SparkCatalog"
S3_FILE_IO = "org.apache.iceberg.aws.s3.S3FileIO"
AWS_HTTP_CLIENT_TYPE = "urlconnection"
JAVA_CATALOG_TYPES = {"sql": "jdbc", "glue": "glue", "rest": "rest"}
# pyiceberg-only catalog properties (SqlCatalog's engine settings and Python IO): never handed to Java.
PYICEBERG_ONLY_PROPERTIES = frozenset(
    {"type", "uri", "warehouse", "init_catalog_tables", "schema_version", "echo", "pool_pre_ping", "py-io-impl"}
)
# sqlite-jdbc's open flags: SQLITE_OPEN_READONLY = 1 (no READWRITE, no CREATE).
SQLITE_READ_ONLY_OPEN_MODE = "1"


class SparkCatalogConfigError(LakeError):
    """The lake's catalog settings cannot be expressed as a Spark catalog, or a session already has another one."""


def jdbc_connection(sqlalchemy_uri: str, *, writable: bool = False) -> tuple[str, dict[str, str]]:
    """The JDBC URL and driver properties (``jdbc.*`` catalog properties) of pyiceberg's SQLAlchemy URI."""
    url = make_url(sqlalchemy_uri)
    backend = url.get_backend_name()
    properties: dict[str, str] = {}
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise SparkCatalogConfigError(f"an in-memory SQLite catalog ({sqlalchemy_uri}) cannot be shared with Spark")
        # Spark's JVM may run in another working directory: name the file absolutely.
        jdbc_url = f"jdbc:sqlite:{Path(url.database).resolve()}"
        if not writable:
            properties["jdbc.open_mode"] = SQLITE_READ_ONLY_OPEN_MODE
    elif backend == "postgresql":
        host = url.host or "localhost"
        query = urlencode({k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()})
        jdbc_url = f"jdbc:postgresql://{host}:{url.port or 5432}/{url.database or ''}" + (f"?{query}" if query else "")
        if url.username:
            properties["jdbc.user"] = url.username
        if url.password:
            properties["jdbc.password"] = str(url.password)
        if not writable:
            # "always": autocommit statements too, not only explicit transactions (pgjdbc's default).
            properties["jdbc.readOnly"] = "true"
            properties["jdbc.readOnlyMode"] = "always"
    else:
        raise SparkCatalogConfigError(
            f"SQL catalog backend {backend!r} ({url.render_as_string(hide_password=True)}) has no JDBC driver "
            "among the Spark jars: use SQLite or PostgreSQL"
        )
    return jdbc_url, properties


def iceberg_catalog_properties(lake: IcebergLakeResource, *, writable: bool = False) -> dict[str, str]:
    """Properties of Iceberg's Java catalog (without the ``spark.sql.catalog.<name>.`` prefix) for the lake's."""
    config = lake.catalog_config()
    catalog_type = config["type"]
    if catalog_type not in JAVA_CATALOG_TYPES:
        raise SparkCatalogConfigError(f"catalog type {catalog_type!r} has no Spark catalog equivalent")
    properties = {"type": JAVA_CATALOG_TYPES[catalog_type], "warehouse": config["warehouse"], "cache-enabled": "false"}
    # Shared names mean the same in both (client.region, s3.endpoint, glue.endpoint, glue.id, REST credentials...).
    properties.update({k: v for k, v in config.items() if k not in PYICEBERG_ONLY_PROPERTIES and v != ""})
    if catalog_type == "sql":
        jdbc_url, jdbc_properties = jdbc_connection(config["uri"], writable=writable)
        properties["uri"] = jdbc_url
        properties.update(jdbc_properties)
        properties["jdbc.init-catalog-tables"] = "false"
        properties["jdbc.schema-version"] = config.get("schema_version", "v0").upper() if writable else "V0"
    elif "uri" in config:
        properties["uri"] = config["uri"]
    on_s3 = config["warehouse"].startswith(("s3://", "s3a://"))
    if on_s3:
        # pyiceberg names objects s3://, which Hadoop's file IO (the JDBC and REST default) cannot open.
        properties.setdefault("io-impl", S3_FILE_IO)
        if properties.get("s3.endpoint"):
            # An endpoint override (S3-compatible store, test server on an IP) has no per-bucket host names; Arrow's
            # S3 client (pyiceberg) addresses buckets by path there too.
            properties.setdefault("s3.path-style-access", "true")
    if on_s3 or catalog_type == "glue":
        # Iceberg 1.12's default ("apache") is the AWS SDK's Apache 5 client, absent from the SDK bundle Spark
        # carries (see batch_platform.spark_jars): without this, the first query fails with NoClassDefFoundError.
        properties.setdefault("http-client.type", AWS_HTTP_CLIENT_TYPE)
    return properties


def spark_catalog_conf(lake: IcebergLakeResource, *, writable: bool = False) -> dict[str, str]:
    """Spark settings registering the lake's catalog as Spark catalog ``lake.catalog_name`` (default ``lake``)."""
    prefix = f"spark.sql.catalog.{lake.catalog_name}"
    properties = iceberg_catalog_properties(lake, writable=writable)
    return {prefix: SPARK_CATALOG_CLASS, **{f"{prefix}.{k}": v for k, v in properties.items()}}


def attach_lake_catalog(spark: SparkSession, lake: IcebergLakeResource, *, writable: bool = False) -> str:
    """Register the lake's catalog in a running session; returns the catalog name to query (``lake``).

    Spark reads ``spark.sql.catalog.<name>.*`` when the catalog is first used and then keeps that instance, so a
    session whose catalog of this name is configured differently is refused rather than silently left as it is;
    ``spark.newSession()`` shares the JVM and has a catalog manager of its own.
    """
    wanted = spark_catalog_conf(lake, writable=writable)
    prefix = f"spark.sql.catalog.{lake.catalog_name}"
    current = {k: v for k, v in spark.conf.getAll.items() if k == prefix or k.startswith(f"{prefix}.")}
    if current and current != wanted:
        different = sorted(k for k in current.keys() | wanted.keys() if current.get(k) != wanted.get(k))
        raise SparkCatalogConfigError(
            f"this Spark session already has a catalog {lake.catalog_name!r} configured differently ({different}); "
            "use a session of its own (spark.newSession())"
        )
    for key, value in wanted.items():
        spark.conf.set(key, value)
    return lake.catalog_name
