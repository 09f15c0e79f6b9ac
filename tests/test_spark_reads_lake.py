"""Spark as a second engine over the lake: Iceberg's own Spark catalog reads what the platform wrote with pyiceberg.

The lending pipeline (raw -> core -> reporting) runs over three business days in two runs, a two-day backfill and
then one daily run, so every table has snapshots from two runs. Then, for every table of the lending domain, Spark
SQL over catalog ``lake`` (configured by ``batch_platform.lake.spark_catalog`` from the lake resource's settings)
must return what pyiceberg returns: rows, rows per partition, snapshots with their lineage, and time travel.
All Spark work shares the test process's one JVM; each lake gets its own ``spark.newSession()``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from aws_support import REGION, isolated_aws_env, new_bucket
from pg_server import PostgresServer
from py4j.protocol import Py4JJavaError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import assets.lending.tables as lending_tables
from assets.lending.contract import LENDING_START, business_days
from assets.lending.core import core_assets
from assets.lending.landing import LandingZone, LandingZoneResource
from assets.lending.raw import raw_assets
from assets.lending.reporting import reporting_assets
from assets.lending.simulator import simulate
from assets.lending.world import SimulationConfig
from batch_platform import spark_jars
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.commit import SUMMARY_ASSET_KEY, SUMMARY_PARTITIONS, SUMMARY_RUN_ID
from batch_platform.lake.spark_catalog import (
    SPARK_CATALOG_CLASS,
    SparkCatalogConfigError,
    attach_lake_catalog,
    spark_catalog_conf,
)
from batch_platform.pii import PiiTokenizer
from batch_platform.settings import DATA_DIR_ENV
from batch_platform.spark import LakeSparkResource, SparkResource
from resources import (
    AWS_REGION_ENV,
    CATALOG_TYPE_ENV,
    CATALOG_URI_ENV,
    GLUE_ENDPOINT_ENV,
    S3_ENDPOINT_ENV,
    WAREHOUSE_ENV,
    local_resources,
    prod_resources,
)

FIRST = date.fromisoformat(LENDING_START)
DAYS = [d.isoformat() for d in business_days(FIRST, date(2023, 1, 5))]  # three business days
TEST_PII_KEY = "test-only-hmac-key-0123456789abcdef0123"
LINEAGE_KEYS = (SUMMARY_RUN_ID, SUMMARY_ASSET_KEY, SUMMARY_PARTITIONS)


def lending_domain_tables() -> list[LakeTable]:
    """Every LakeTable the lending domain declares (module constants and the raw tables' dict)."""
    found: dict[str, LakeTable] = {}
    for value in vars(lending_tables).values():
        candidates = value.values() if type(value) is dict else value if type(value) is tuple else [value]
        for candidate in candidates:
            if isinstance(candidate, LakeTable):
                found[candidate.identifier] = candidate
    return [found[k] for k in sorted(found)]


@dataclass
class Pipeline:
    lake: IcebergLakeResource
    spark: SparkSession  # a session of its own, with this lake's catalog attached
    run_ids: list[str]


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, spark_resource: SparkResource, spark: SparkSession
) -> Iterator[Pipeline]:
    root: Path = tmp_path_factory.mktemp("spark_reads_lake")
    landing = LandingZone.local(root / "landing")
    simulate(SimulationConfig(seed=7, start=FIRST, scale=0.05), FIRST, date.fromisoformat(DAYS[-1]), landing)
    lake = IcebergLakeResource(data_dir=str(root / "lake"))
    resources = {
        "lake": lake,
        "spark": spark_resource,
        "landing": LandingZoneResource(uri=str(root / "landing")),
        "pii": PiiTokenizer(key=TEST_PII_KEY),
    }
    instance = dg.DagsterInstance.ephemeral()
    selection = [*raw_assets, *core_assets, *reporting_assets]
    backfill = dg.materialize(
        selection,
        resources=resources,
        instance=instance,
        tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]},
    )
    daily = dg.materialize(selection, resources=resources, instance=instance, partition_key=DAYS[2])
    assert backfill.success and daily.success
    reader = spark.newSession()
    assert attach_lake_catalog(reader, lake) == "lake"
    yield Pipeline(lake, reader, [backfill.run_id, daily.run_id])


def _partition_counts(data: pa.Table, column: str) -> dict[date, int]:
    return {row["values"]: row["counts"] for row in pc.value_counts(data[column]).to_pylist()}


def _spark_partition_counts(df: DataFrame, column: str) -> dict[date, int]:
    return {row[column]: row["count"] for row in df.groupBy(column).count().collect()}


def _version_as_of(spark: SparkSession, name: str, snapshot_id: int) -> DataFrame:
    # Time travel has no parameter marker (and IDENTIFIER(:t) with VERSION AS OF fails inside Spark 4.1); the
    # name comes from a table declaration and the id from the catalog.
    return spark.sql(f"SELECT * FROM {name} VERSION AS OF {snapshot_id:d}")  # noqa: S608


def _lineage(summary: dict[str, str]) -> dict[str, str | None]:
    return {key: summary.get(key) for key in LINEAGE_KEYS}


def _pyiceberg_snapshots(table: Table) -> dict[int, tuple[int | None, str, dict[str, str | None]]]:
    snapshots = {}
    for snapshot in table.snapshots():
        assert snapshot.summary is not None
        summary = {k: v for k, v in snapshot.summary.additional_properties.items()}
        snapshots[snapshot.snapshot_id] = (snapshot.parent_snapshot_id, snapshot.summary.operation.value, summary)
    return snapshots


def test_every_lending_table_is_in_the_catalog_spark_reads(pipeline: Pipeline) -> None:
    declared = {t.identifier for t in lending_domain_tables()}
    assert len(declared) >= 20
    in_spark = {
        f"{row['namespace']}.{row['tableName']}"
        for namespace in ("raw", "core", "reporting")
        for row in pipeline.spark.sql(f"SHOW TABLES IN lake.{namespace}").collect()
    }
    assert in_spark == declared


@pytest.mark.parametrize("table", lending_domain_tables(), ids=lambda t: t.identifier)
def test_spark_reads_the_same_rows_partitions_snapshots_and_lineage_as_pyiceberg(
    pipeline: Pipeline, table: LakeTable
) -> None:
    spark, name = pipeline.spark, f"lake.{table.identifier}"
    iceberg_table = pipeline.lake.load(table)
    data = iceberg_table.scan().to_arrow()
    assert table.partition_column is not None

    assert spark.table(name).count() == data.num_rows
    assert _spark_partition_counts(spark.table(name), table.partition_column) == _partition_counts(
        data, table.partition_column
    )

    expected = _pyiceberg_snapshots(iceberg_table)
    rows = spark.table(f"{name}.snapshots").select("snapshot_id", "parent_id", "operation", "summary").collect()
    actual = {r["snapshot_id"]: (r["parent_id"], r["operation"], _lineage(r["summary"])) for r in rows}
    assert actual == {sid: (parent, op, _lineage(summary)) for sid, (parent, op, summary) in expected.items()}
    head = iceberg_table.current_snapshot()
    refs = spark.table(f"{name}.refs").select("name", "snapshot_id").collect()
    if head is None:
        # A source without a row in these days (no charge-off yet): nothing committed, for either engine.
        assert data.num_rows == 0 and refs == [] and expected == {}
        return
    assert {r["name"]: r["snapshot_id"] for r in refs} == {"main": head.snapshot_id}  # audit branches are gone

    # The head of main was committed by this table's own asset in one of the two runs, for partitions written.
    head_lineage = actual[head.snapshot_id][2]
    assert head_lineage[SUMMARY_RUN_ID] in pipeline.run_ids
    assert head_lineage[SUMMARY_ASSET_KEY] == table.asset_key.to_user_string()
    assert set((head_lineage[SUMMARY_PARTITIONS] or "").split(",")) <= set(DAYS)


@pytest.mark.parametrize("table", lending_domain_tables(), ids=lambda t: t.identifier)
def test_version_as_of_the_backfill_snapshot_returns_that_snapshots_rows(pipeline: Pipeline, table: LakeTable) -> None:
    iceberg_table = pipeline.lake.load(table)
    backfill_run = pipeline.run_ids[0]
    older = next(
        (
            s
            for s in ancestors_of(iceberg_table.current_snapshot(), iceberg_table.metadata)
            if s.summary is not None and s.summary.get(SUMMARY_RUN_ID) == backfill_run
        ),
        None,
    )
    name = f"lake.{table.identifier}"
    assert table.partition_column is not None
    if older is None:
        # The backfill committed nothing to this table: it has no row of the backfill's days now either.
        days = pipeline.spark.table(name).select(table.partition_column).distinct().collect()
        assert not {r[0].isoformat() for r in days} & set(DAYS[:2])
        return
    expected = iceberg_table.scan(snapshot_id=older.snapshot_id).to_arrow()

    old = _version_as_of(pipeline.spark, name, older.snapshot_id)
    assert old.count() == expected.num_rows
    # Partitions as of the backfill: never the daily run's day.
    assert DAYS[2] not in {d.isoformat() for d in _partition_counts(expected, table.partition_column)}
    assert _spark_partition_counts(old, table.partition_column) == _partition_counts(expected, table.partition_column)


def test_time_travel_is_not_the_current_table(pipeline: Pipeline) -> None:
    """At least the busy tables grew between the backfill and the daily run, so the two reads above differ."""
    grown = []
    for table in lending_domain_tables():
        name = f"lake.{table.identifier}"
        history = pipeline.spark.table(f"{name}.history").filter("is_current_ancestor")
        snapshots = history.join(pipeline.spark.table(f"{name}.snapshots"), "snapshot_id")
        runs = snapshots.select("made_current_at", "snapshot_id", F.col("summary")[SUMMARY_RUN_ID].alias("run"))
        backfill = [r["snapshot_id"] for r in sorted(runs.collect()) if r["run"] == pipeline.run_ids[0]]
        if backfill and _version_as_of(pipeline.spark, name, backfill[-1]).count() < pipeline.spark.table(name).count():
            grown.append(table.identifier)
    assert {"core.applications", "core.loans", "raw.loans"} <= set(grown)


# -- a small lake of its own: freshness, read-only, compatibility with pyiceberg's later writes -----------------

EVENTS = LakeTable(
    namespace="core",
    name="events",
    partition_column="event_date",
    schema=pa.schema([pa.field("event_date", pa.date32(), nullable=False), pa.field("amount", pa.int64())]),
)


def _events(day: str, rows: int) -> pa.Table:
    return pa.table({"event_date": [date.fromisoformat(day)] * rows, "amount": list(range(rows))})


def _write(lake: IcebergLakeResource, day: str, rows: int) -> int:
    lineage = Lineage(run_id=f"run-{day}", asset_key="core/events", partition_keys=(day,))
    result = lake.write_arrow(EVENTS, _events(day, rows), partition_keys=[day], lineage=lineage)
    assert result.snapshot_id is not None
    return result.snapshot_id


def _java_causes(error: Py4JJavaError) -> list[str]:
    causes, current = [], error.java_exception
    while current is not None:
        causes.append(str(current.toString()))
        current = current.getCause()
    return causes


def _check_reads_writes_and_read_only(lake: IcebergLakeResource, spark: SparkSession) -> None:
    """Shared by the SQLite and PostgreSQL catalogs."""
    first = _write(lake, "2024-01-01", 3)
    reader = spark.newSession()
    attach_lake_catalog(reader, lake)
    assert reader.table("lake.core.events").count() == 3

    # A commit made after Spark's first read is seen by the next query (the Spark catalog caches no table).
    _write(lake, "2024-01-02", 5)
    assert reader.table("lake.core.events").count() == 8
    assert _version_as_of(reader, "lake.core.events", first).count() == 3

    # Read-only: a Spark INSERT fails at its catalog commit and the table keeps its snapshots.
    before = [s.snapshot_id for s in lake.load(EVENTS).snapshots()]
    with pytest.raises(Py4JJavaError) as refused:
        reader.sql("INSERT INTO lake.core.events VALUES (DATE'2024-01-03', 1)")
    assert any("read" in c.lower() and "only" in c.lower() for c in _java_causes(refused.value)), _java_causes(
        refused.value
    )
    assert [s.snapshot_id for s in lake.load(EVENTS).snapshots()] == before

    # pyiceberg keeps writing after Spark has read, and Spark sees it.
    _write(lake, "2024-01-03", 2)
    assert reader.table("lake.core.events").count() == 10
    assert lake.read_arrow(EVENTS).num_rows == 10


def test_spark_over_the_sqlite_catalog_sees_new_commits_is_read_only_and_leaves_pyiceberg_writing(
    lake: IcebergLakeResource, spark: SparkSession
) -> None:
    _check_reads_writes_and_read_only(lake, spark)
    # The catalog tables keep pyiceberg's schema (iceberg_type column, no other table): Spark changed no DDL.
    uri = lake.catalog_config()["uri"]
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {r[1] for r in db.execute("PRAGMA table_info(iceberg_tables)")}
    assert tables == {"iceberg_tables", "iceberg_namespace_properties"}
    assert "iceberg_type" in columns


def test_spark_over_the_postgres_catalog_sees_new_commits_is_read_only_and_leaves_pyiceberg_writing(
    postgres_server: PostgresServer, pg_database: str, tmp_path: Path, spark: SparkSession
) -> None:
    lake = IcebergLakeResource(
        catalog_uri=postgres_server.sqlalchemy_uri(pg_database),
        warehouse=(tmp_path / "warehouse").as_uri(),
        allow_local_defaults=False,
    )
    assert spark_catalog_conf(lake)["spark.sql.catalog.lake.uri"] == postgres_server.jdbc_url(pg_database)
    _check_reads_writes_and_read_only(lake, spark)


def test_attaching_a_different_lake_to_a_session_that_has_one_is_refused(tmp_path: Path, spark: SparkSession) -> None:
    session = spark.newSession()
    first = IcebergLakeResource(data_dir=str(tmp_path / "a"))
    attach_lake_catalog(session, first)
    attach_lake_catalog(session, first)  # the same settings again: nothing to change
    with pytest.raises(SparkCatalogConfigError, match="configured differently"):
        attach_lake_catalog(session, IcebergLakeResource(data_dir=str(tmp_path / "b")))


# -- Glue catalog and S3 warehouse, served by moto ---------------------------------------------------------------


@pytest.fixture
def glue_lake(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> IcebergLakeResource:
    """PROD's lake on moto's Glue and S3, dummy credentials through the default AWS chain."""
    isolated_aws_env(moto_endpoint, monkeypatch, tmp_path)
    bucket = new_bucket(moto_endpoint)
    _set_prod_lake_env(monkeypatch, "glue", "", f"s3://{bucket}/warehouse", moto_endpoint)
    lake = prod_resources()["lake"].process_config_and_initialize()  # what a PROD run builds at its start
    assert isinstance(lake, IcebergLakeResource)
    return lake


def test_spark_reads_a_table_of_the_s3_warehouse_through_the_glue_catalog(
    glue_lake: IcebergLakeResource, spark: SparkSession
) -> None:
    first = _write(glue_lake, "2024-01-01", 3)
    _write(glue_lake, "2024-01-02", 5)
    reader = spark.newSession()
    # The JVM started before this test exported credentials; the AWS SDK's default chain reads system properties
    # first (Iceberg's Glue client and S3FileIO use that chain, as in production).
    jvm = reader.sparkContext._jvm
    assert jvm is not None
    jvm.System.setProperty("aws.accessKeyId", "testing")
    jvm.System.setProperty("aws.secretAccessKey", "testing")
    attach_lake_catalog(reader, glue_lake)

    table = glue_lake.load(EVENTS)
    assert _spark_partition_counts(reader.table("lake.core.events"), "event_date") == {
        date(2024, 1, 1): 3,
        date(2024, 1, 2): 5,
    }
    assert _version_as_of(reader, "lake.core.events", first).count() == 3
    snapshots = reader.table("lake.core.events.snapshots").collect()
    assert [r["snapshot_id"] for r in snapshots] == [s.snapshot_id for s in table.snapshots()]
    assert snapshots[-1]["summary"][SUMMARY_RUN_ID] == "run-2024-01-02"
    files = reader.table("lake.core.events.files").select("file_path").collect()
    assert files and all(r[0].startswith(f"{glue_lake.warehouse_uri()}/core") for r in files)


# -- settings derived from each kind of catalog ----------------------------------------------------------------


def test_sqlite_catalog_settings_point_spark_at_the_same_file_and_warehouse(tmp_path: Path) -> None:
    lake = IcebergLakeResource(data_dir=str(tmp_path))
    conf = spark_catalog_conf(lake)
    assert conf["spark.sql.catalog.lake"] == SPARK_CATALOG_CLASS
    assert conf["spark.sql.catalog.lake.type"] == "jdbc"
    assert conf["spark.sql.catalog.lake.uri"] == f"jdbc:sqlite:{tmp_path / 'catalog.db'}"
    assert conf["spark.sql.catalog.lake.warehouse"] == (tmp_path / "warehouse").as_uri()
    assert conf["spark.sql.catalog.lake.jdbc.init-catalog-tables"] == "false"
    assert conf["spark.sql.catalog.lake.cache-enabled"] == "false"
    assert "spark.sql.catalog.lake.io-impl" not in conf  # Hadoop's file IO reads file://
    assert "spark.sql.catalog.lake.http-client.type" not in conf  # no AWS client


def test_postgres_catalog_settings_carry_credentials_as_driver_properties_and_open_read_only() -> None:
    lake = IcebergLakeResource(
        catalog_uri="postgresql+psycopg2://dagster:s%40cret@db.internal:6543/lake?sslmode=require",
        warehouse="s3://bucket/warehouse",
        region="eu-west-1",
        allow_local_defaults=False,
    )
    conf = {k.removeprefix("spark.sql.catalog.lake."): v for k, v in spark_catalog_conf(lake).items()}
    assert conf["uri"] == "jdbc:postgresql://db.internal:6543/lake?sslmode=require"
    assert (conf["jdbc.user"], conf["jdbc.password"]) == ("dagster", "s@cret")
    assert (conf["jdbc.readOnly"], conf["jdbc.readOnlyMode"]) == ("true", "always")
    assert conf["io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert conf["client.region"] == "eu-west-1"
    assert "s3.path-style-access" not in conf  # AWS's own endpoint: virtual-host addressing
    assert conf["http-client.type"] == "urlconnection"
    assert "spark.sql.catalog.lake.jdbc.readOnly" not in spark_catalog_conf(lake, writable=True)


def test_glue_catalog_settings_use_glue_and_s3_file_io_with_the_endpoint_overrides() -> None:
    lake = IcebergLakeResource(
        catalog_type="glue",
        warehouse="s3://lake-bucket/warehouse/",
        region="eu-west-1",
        s3_endpoint="http://127.0.0.1:5000",
        glue_endpoint="http://127.0.0.1:5001",
        catalog_properties={"glue.id": "123456789012"},
        allow_local_defaults=False,
    )
    conf = {k.removeprefix("spark.sql.catalog.lake."): v for k, v in spark_catalog_conf(lake).items()}
    assert conf == {
        "spark.sql.catalog.lake": SPARK_CATALOG_CLASS,
        "type": "glue",
        "warehouse": "s3://lake-bucket/warehouse",
        "cache-enabled": "false",
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "client.region": "eu-west-1",
        "s3.endpoint": "http://127.0.0.1:5000",
        "s3.path-style-access": "true",
        "glue.endpoint": "http://127.0.0.1:5001",
        "glue.id": "123456789012",
        "http-client.type": "urlconnection",
    }


def test_an_in_memory_sqlite_catalog_cannot_be_shared_with_spark(tmp_path: Path) -> None:
    lake = IcebergLakeResource(catalog_uri="sqlite://", warehouse=tmp_path.as_uri())
    with pytest.raises(SparkCatalogConfigError, match="in-memory"):
        spark_catalog_conf(lake)


# -- the Spark resource starts its session with the lake's catalog -------------------------------------------------


def _set_prod_lake_env(
    monkeypatch: pytest.MonkeyPatch, catalog_type: str, catalog_uri: str, warehouse: str, endpoint: str
) -> None:
    for name, value in {
        CATALOG_TYPE_ENV: catalog_type,
        CATALOG_URI_ENV: catalog_uri,
        WAREHOUSE_ENV: warehouse,
        AWS_REGION_ENV: REGION,
        S3_ENDPOINT_ENV: endpoint,
        GLUE_ENDPOINT_ENV: endpoint,
    }.items():
        monkeypatch.setenv(name, value)


def _catalog_settings(resources: dict[str, Any]) -> tuple[IcebergLakeResource, dict[str, str]]:
    """The lake and the Spark session's catalog settings as a run builds them (EnvVars resolved now)."""
    with dg.build_resources({"lake": resources["lake"], "spark": resources["spark"]}) as built:
        settings = built.spark.session_settings()  # no session is started: the resource is lazy
        assert built.spark._spark_session is None
        lake = built.lake
    return lake, {k: v for k, v in settings.items() if k.startswith("spark.sql.catalog.")}


def test_local_spark_session_starts_with_the_local_lakes_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    lake, settings = _catalog_settings(local_resources())
    assert settings == spark_catalog_conf(lake)
    assert settings["spark.sql.catalog.lake.uri"] == f"jdbc:sqlite:{tmp_path / 'catalog.db'}"
    assert settings["spark.sql.catalog.lake.warehouse"] == (tmp_path / "warehouse").as_uri()


def test_prod_spark_session_takes_the_catalog_from_the_run_environment_like_the_lake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = prod_resources()  # built once, as a code location does; the variables are read at each run start
    _set_prod_lake_env(monkeypatch, "glue", "", "s3://lake-bucket/warehouse", "http://127.0.0.1:5000")
    lake, glue = _catalog_settings(resources)
    assert glue == spark_catalog_conf(lake)
    assert glue["spark.sql.catalog.lake.type"] == "glue"
    assert glue["spark.sql.catalog.lake.glue.endpoint"] == glue["spark.sql.catalog.lake.s3.endpoint"]

    _set_prod_lake_env(
        monkeypatch, "sql", "postgresql+psycopg2://dagster:pw@db.internal:5432/lake", "s3://lake-bucket/w", ""
    )
    _, sql = _catalog_settings(resources)
    assert sql["spark.sql.catalog.lake.type"] == "jdbc"
    assert sql["spark.sql.catalog.lake.uri"] == "jdbc:postgresql://db.internal:5432/lake"
    assert sql["spark.sql.catalog.lake.jdbc.readOnly"] == "true"
    assert "spark.sql.catalog.lake.s3.endpoint" not in sql  # empty variable: AWS's own endpoint


def test_spark_config_cannot_point_the_lake_catalog_elsewhere(tmp_path: Path) -> None:
    lake = IcebergLakeResource(data_dir=str(tmp_path))
    elsewhere = {"spark.sql.catalog.lake.uri": "jdbc:sqlite:other.db", "spark.sql.catalog.lake.type": "hadoop"}
    settings = LakeSparkResource(spark_config=elsewhere, lake=lake).session_settings()
    assert settings["spark.sql.catalog.lake.uri"] == f"jdbc:sqlite:{tmp_path / 'catalog.db'}"
    assert settings["spark.sql.catalog.lake.type"] == "jdbc"
    assert not any(k.startswith("spark.sql.catalog.") for k in SparkResource().session_settings())


def test_the_aws_http_client_jar_is_the_sdk_bundles_version() -> None:
    """Iceberg's AWS clients load the URLConnection client from its own jar: SDK jars of two versions do not mix."""
    sdk = {jar.artifact: jar.version for jar in spark_jars.S3 if jar.group == "software.amazon.awssdk"}
    assert sdk["url-connection-client"] == sdk["bundle"]
