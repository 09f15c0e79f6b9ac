"""The production write path for real: Spark's executors stage Parquet on S3 through ``s3a://`` (hadoop-aws and
the AWS SDK v2), pyiceberg commits the files to a Glue catalog; both served by a moto server over real HTTP.

The shared test session (tests/conftest.py) started before these tests set any AWS variable, so it is pointed at
the test bucket at runtime: per-bucket S3A settings in its Hadoop configuration, and credentials through the AWS
SDK's default chain (PROD's provider) from JVM system properties, the one source of that chain a running JVM can
still be given. The killed writer is a fresh process that starts Spark with PROD's own settings
(``resources.prod_resources``) and credentials from its environment, as a run pod does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest
import sqlalchemy as sa
from aws_support import REGION, isolated_aws_env, new_bucket
from pg_server import PostgresServer
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from test_lake_crash_safety import (
    ASSET_KEY,
    CRASH_EVENTS,
    CRASH_WRITER,
    STAGE_TIMEOUT_S,
    kill_process_group,
    live_processes_in_group,
    wait_for_marker,
)

from assets.lending.contract import DATASETS, LENDING_START
from assets.lending.core import LOAN_BOOK_INPUTS, core_assets
from assets.lending.landing import LandingZone
from assets.lending.raw import raw_assets
from assets.lending.reporting import reporting_assets
from assets.lending.simulator import simulate
from assets.lending.tables import (
    CORE_LOAN_DAILY_STATUS,
    CORE_LOANS,
    CORE_TABLES,
    RAW_QUARANTINE,
    RAW_TABLES,
    REPORTING_MERCHANT_PERFORMANCE,
    REPORTING_PORTFOLIO_DAILY,
    REPORTING_VINTAGE_CURVES,
)
from assets.lending.world import SimulationConfig
from batch_platform.lake import IcebergLakeResource, LakeTable, Lineage
from batch_platform.lake.maintenance import build_maintenance_job, maintenance_run_config, reachable_files
from batch_platform.lake.spark_catalog import attach_lake_catalog
from batch_platform.spark import SparkResource, with_s3a_endpoint_settings
from definitions import build_definitions
from resources import (
    ALERT_WEBHOOK_URL_ENV,
    AWS_DEFAULT_CREDENTIALS_PROVIDER,
    AWS_REGION_ENV,
    CATALOG_TYPE_ENV,
    CATALOG_URI_ENV,
    GLUE_ENDPOINT_ENV,
    LANDING_URI_ENV,
    PII_KEY_ENV,
    S3_ENDPOINT_ENV,
    WAREHOUSE_ENV,
    prod_resources,
)

DAY = "2024-03-01"
ROWS = 5_000


@dataclass(frozen=True)
class S3Lake:
    endpoint: str
    bucket: str
    warehouse: str
    lake: IcebergLakeResource

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION)

    def keys(self, prefix: str = "") -> set[str]:
        """Object keys in the bucket, without the empty "folder/" markers S3A and pyarrow leave."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        objects = [o for page in pages for o in page.get("Contents", [])]
        return {o["Key"] for o in objects if not (o["Key"].endswith("/") and o["Size"] == 0)}

    def read(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def key_of(self, uri: str) -> str:
        prefix = f"s3://{self.bucket}/"
        assert uri.startswith(prefix), f"{uri} is not an s3:// URI in bucket {self.bucket}"
        return uri[len(prefix) :]


@pytest.fixture
def s3_lake(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Lake:
    """A fresh bucket, PROD's variables pointing at moto's S3 and Glue, dummy credentials through the default chain."""
    isolated_aws_env(moto_endpoint, monkeypatch, tmp_path)
    bucket = new_bucket(moto_endpoint)
    warehouse = f"s3://{bucket}/warehouse"
    monkeypatch.setenv(CATALOG_TYPE_ENV, "glue")
    monkeypatch.setenv(CATALOG_URI_ENV, "")
    monkeypatch.setenv(WAREHOUSE_ENV, warehouse)
    monkeypatch.setenv(AWS_REGION_ENV, REGION)
    monkeypatch.setenv(S3_ENDPOINT_ENV, moto_endpoint)
    monkeypatch.setenv(GLUE_ENDPOINT_ENV, moto_endpoint)
    lake = prod_resources()["lake"].process_config_and_initialize()  # what a PROD run builds at its start
    assert isinstance(lake, IcebergLakeResource)
    return S3Lake(moto_endpoint, bucket, warehouse, lake)


JVM_CREDENTIAL_PROPERTIES = {"aws.accessKeyId": "AWS_ACCESS_KEY_ID", "aws.secretAccessKey": "AWS_SECRET_ACCESS_KEY"}


@contextlib.contextmanager
def s3a_pointed_at(spark: SparkSession, bucket: str, endpoint: str, region: str) -> Iterator[SparkSession]:
    """Per-bucket S3A settings in a running session, and credentials for the SDK's default chain; undone after.

    S3A reads ``fs.s3a.bucket.<bucket>.*`` when it creates the bucket's file system, which happens on first use, so
    a fresh bucket takes them although the session is older. Environment variables exported after the JVM
    started are invisible to it; the default chain reads JVM system properties first.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    settings = {
        f"fs.s3a.bucket.{bucket}.{key}": value
        for key, value in {
            "endpoint": endpoint,
            "endpoint.region": region,
            "path.style.access": "true",
            "aws.credentials.provider": AWS_DEFAULT_CREDENTIALS_PROVIDER,
        }.items()
    }
    for key, value in settings.items():
        conf.set(key, value)
    for prop, variable in JVM_CREDENTIAL_PROPERTIES.items():
        jvm.System.setProperty(prop, os.environ[variable])
    try:
        yield spark
    finally:
        for key in settings:
            conf.unset(key)
        for prop in JVM_CREDENTIAL_PROPERTIES:
            jvm.System.clearProperty(prop)


@pytest.fixture
def s3a_spark(spark: SparkSession, s3_lake: S3Lake) -> Iterator[SparkSession]:
    with s3a_pointed_at(spark, s3_lake.bucket, s3_lake.endpoint, REGION) as session:
        yield session


def events(spark: SparkSession, day: str, rows: int, run_id: str) -> Any:
    return spark.range(rows).select(
        F.lit(day).cast("date").alias("event_date"),
        F.col("id").alias("event_id"),
        F.lit(run_id).alias("writer_run_id"),
        (F.col("id") / 100).alias("amount"),
    )


# -- reading Iceberg metadata as another engine would: raw objects, no pyiceberg -----------------------------------


def _avro_long(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos


def _avro_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    size, pos = _avro_long(data, pos)
    return data[pos : pos + size], pos + size


def avro_content(data: bytes) -> tuple[dict[str, bytes], bytes]:
    """Header metadata and the decompressed data blocks of an Avro object container file (Avro spec 1.11)."""
    assert data[:4] == b"Obj\x01", "not an Avro object container file"
    pos, meta = 4, {}
    while True:
        count, pos = _avro_long(data, pos)
        if count == 0:
            break
        if count < 0:
            count = -count
            _, pos = _avro_long(data, pos)  # the block's byte size
        for _ in range(count):
            key, pos = _avro_bytes(data, pos)
            meta[key.decode()], pos = _avro_bytes(data, pos)
    pos += 16  # sync marker
    codec = meta.get("avro.codec", b"null").decode()
    assert codec in ("null", "deflate"), f"unexpected Avro codec {codec}"
    blocks = []
    while pos < len(data):
        _, pos = _avro_long(data, pos)  # objects in the block
        block, pos = _avro_bytes(data, pos)
        pos += 16
        blocks.append(zlib.decompress(block, -15) if codec == "deflate" else block)
    return meta, b"".join(blocks)


def metadata_objects(s3: S3Lake, table_location: str) -> dict[str, bytes]:
    """Every object of the table's metadata folder (metadata.json files, manifest lists, manifests), decoded."""
    found = {}
    for key in sorted(s3.keys(s3.key_of(table_location) + "/metadata/")):
        raw = s3.read(key)
        if key.endswith(".avro"):
            meta, blocks = avro_content(raw)
            found[key] = b"".join(meta.values()) + blocks
        else:
            found[key] = raw
    return found


# -- tests ---------------------------------------------------------------------------------------------------------


def test_spark_write_through_s3a_commits_only_s3_uris_and_reads_back_the_same_rows_in_pyiceberg_and_spark(
    s3_lake: S3Lake, s3a_spark: SparkSession
) -> None:
    lake = s3_lake.lake
    run_id = uuid.uuid4().hex
    lineage = Lineage(run_id=run_id, asset_key=ASSET_KEY, partition_keys=(DAY,))

    result = lake.write_spark(
        s3a_spark, CRASH_EVENTS, events(s3a_spark, DAY, ROWS, run_id), partition_keys=[DAY], lineage=lineage
    )

    assert result.rows == ROWS and result.files >= 1
    table = lake.load(CRASH_EVENTS)
    location = table.location()
    assert location.startswith(f"{s3_lake.warehouse}/")
    # The staged files are the committed data files, in place under the run's staging folder, named s3://.
    data_files = [t.file.file_path for t in table.scan().plan_files()]
    assert len(data_files) == result.files
    assert all(f.startswith(lake.run_staging_uri(CRASH_EVENTS, run_id) + "/") for f in data_files)
    assert {s3_lake.key_of(f) for f in data_files} <= s3_lake.keys()

    # The metadata another engine reads names s3:// objects only: no s3a:// in any metadata file, manifest list or
    # manifest (whose decoded blocks do hold the data files' paths).
    objects = metadata_objects(s3_lake, location)
    kinds = {
        "json": [k for k in objects if k.endswith(".metadata.json")],
        "avro": [k for k in objects if k.endswith(".avro")],
    }
    assert kinds["json"] and len(kinds["avro"]) >= 2
    leaking = sorted(k for k, content in objects.items() if b"s3a://" in content)
    assert leaking == []
    manifests_with_data = [k for k in kinds["avro"] if s3_lake.key_of(data_files[0]).encode() in objects[k]]
    assert manifests_with_data and all(f"s3://{s3_lake.bucket}/".encode() in objects[k] for k in manifests_with_data)
    current = json.loads(objects[s3_lake.key_of(table.metadata_location)])
    assert current["location"] == location
    assert {s["manifest-list"].split("://")[0] for s in current["snapshots"]} == {"s3"}

    # The same rows read back through pyiceberg (Arrow over pyarrow's S3) and through Spark (s3a://).
    arrow_rows = lake.read_arrow(CRASH_EVENTS, [DAY])
    spark_rows = lake.read_spark(s3a_spark, CRASH_EVENTS, [DAY])
    assert arrow_rows.num_rows == spark_rows.count() == ROWS
    assert sorted(arrow_rows["event_id"].to_pylist()) == list(range(ROWS))
    assert spark_rows.agg(F.sum("event_id")).first()[0] == sum(range(ROWS))
    # And through another Iceberg implementation: Java's, in Spark SQL, from Glue and with its own S3 client.
    reader = s3a_spark.newSession()
    catalog = attach_lake_catalog(reader, lake)
    java_rows = reader.table(f"{catalog}.{CRASH_EVENTS.identifier}")
    assert java_rows.count() == ROWS
    assert java_rows.agg(F.sum("event_id")).first()[0] == sum(range(ROWS))


def _start_prod_crash_writer(run_id: str, rows: int, log_file: Path) -> subprocess.Popen[str]:
    with log_file.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, str(CRASH_WRITER), "--prod", "--partition", DAY, "--rows", str(rows), "--run-id", run_id],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            # PROD's variables and the dummy credentials, as a run pod's environment: the JVM reads them at start.
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: killpg reaches the JVM that pyspark starts
        )


def test_spark_write_killed_after_staging_on_s3_leaves_table_unchanged_and_maintenance_removes_its_objects(
    s3_lake: S3Lake, s3a_spark: SparkSession, tmp_path: Path
) -> None:
    lake = s3_lake.lake
    first_run = uuid.uuid4().hex
    lake.write_spark(
        s3a_spark,
        CRASH_EVENTS,
        events(s3a_spark, DAY, 200, first_run),
        partition_keys=[DAY],
        lineage=Lineage(first_run, ASSET_KEY, (DAY,)),
    )
    before = lake.load(CRASH_EVENTS)
    before_rows = lake.read_arrow(CRASH_EVENTS, [DAY]).sort_by("event_id")
    before_reachable = reachable_files(before)

    killed_run = uuid.uuid4().hex
    log_file = tmp_path / "crash_writer.stderr"
    proc = _start_prod_crash_writer(killed_run, 500, log_file)
    try:
        staged = wait_for_marker(proc, log_file, STAGE_TIMEOUT_S)
    finally:
        kill_process_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not live_processes_in_group(proc.pid)

    # The killed writer staged real objects through S3A, in its run's folder under the table, named s3://.
    killed_prefix = s3_lake.key_of(lake.run_staging_uri(CRASH_EVENTS, killed_run)) + "/"
    staged_keys = {s3_lake.key_of(f) for f in staged.files}
    assert staged_keys and all(k.startswith(killed_prefix) for k in staged_keys)
    assert staged_keys <= s3_lake.keys(killed_prefix)

    # The table is exactly as before: same metadata file, same snapshots, same rows.
    after = lake.load(CRASH_EVENTS)
    assert after.metadata_location == before.metadata_location
    assert [s.snapshot_id for s in after.snapshots()] == [s.snapshot_id for s in before.snapshots()]
    assert lake.read_arrow(CRASH_EVENTS, [DAY]).sort_by("event_id").equals(before_rows)

    # The maintenance job, with PROD's lake resource, removes the dead run's objects and nothing reachable.
    job = build_maintenance_job([CRASH_EVENTS])
    result = job.execute_in_process(
        resources={"lake": prod_resources()["lake"]},
        run_config=maintenance_run_config([CRASH_EVENTS], retention_days=0, compact=False),
    )

    assert result.success
    [observation] = [e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()]
    assert observation.metadata["maintenance/dead_staging_files_deleted"].value >= len(staged_keys)
    assert s3_lake.keys(killed_prefix) == set()
    remaining = s3_lake.keys()
    reachable = {s3_lake.key_of(uri) for uri in reachable_files(lake.load(CRASH_EVENTS))}
    assert reachable <= remaining
    assert {s3_lake.key_of(uri) for uri in before_reachable if uri.endswith(".parquet")} <= remaining
    assert lake.read_arrow(CRASH_EVENTS, [DAY]).sort_by("event_id").equals(before_rows)
    assert lake.read_spark(s3a_spark, CRASH_EVENTS, [DAY]).count() == before_rows.num_rows


@pytest.mark.parametrize("endpoint", ["http://minio.storage.svc:9000", ""])
def test_prod_spark_addresses_buckets_by_path_only_behind_an_endpoint_override(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3-compatible store's host name has no per-bucket DNS names; AWS's endpoint keeps virtual-host style."""
    monkeypatch.setenv(AWS_REGION_ENV, REGION)
    monkeypatch.setenv(S3_ENDPOINT_ENV, endpoint)
    prod_config = prod_resources()["spark"].spark_config
    with SparkResource(spark_config=prod_config).process_config_and_initialize_cm() as resolved:
        settings = with_s3a_endpoint_settings(resolved.spark_config)  # what the session would start with

    if endpoint:
        assert settings["spark.hadoop.fs.s3a.endpoint"] == endpoint
        assert settings["spark.hadoop.fs.s3a.path.style.access"] == "true"
    else:
        assert "spark.hadoop.fs.s3a.endpoint" not in settings  # S3A then uses the region's AWS endpoint
        assert "spark.hadoop.fs.s3a.path.style.access" not in settings
    assert settings["spark.hadoop.fs.s3a.endpoint.region"] == REGION


# -- one business day in PROD mode ---------------------------------------------------------------------------------

TEST_PII_KEY = "test-only-hmac-key-0123456789abcdef0123"
LENDING_DAY = LENDING_START  # the lender's first business day: its loan book needs no earlier partition


@pytest.fixture
def restored_session_conf(s3a_spark: SparkSession) -> Iterator[SparkSession]:
    """PROD's Spark resource finds the shared session running and sets its options on it: undo that afterwards."""
    conf = s3a_spark._jsparkSession.sessionState().conf()
    before = dict(s3a_spark.conf.getAll)
    yield s3a_spark
    for key, value in dict(s3a_spark.conf.getAll).items():
        if key not in before:
            conf.unsetConf(key)
        elif value != before[key]:
            conf.setConfString(key, before[key])


LENDING_TABLES = {
    t.asset_key: t
    for t in (
        *RAW_TABLES.values(),
        RAW_QUARANTINE,
        *CORE_TABLES,
        REPORTING_PORTFOLIO_DAILY,
        REPORTING_VINTAGE_CURVES,
        REPORTING_MERCHANT_PERFORMANCE,
    )
}


def partition_rows(lake: IcebergLakeResource, table: LakeTable, day: str) -> int:
    return lake.read_arrow(table, [day]).num_rows


def test_one_business_day_in_prod_mode_lands_from_s3_writes_s3_through_s3a_and_records_the_run_in_postgres(
    s3_lake: S3Lake,
    restored_session_conf: SparkSession,
    postgres_server: PostgresServer,
    pg_database: str,
    postgres_instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The day's drop, written by the simulator straight into the landing bucket.
    landing_s3 = pafs.S3FileSystem(endpoint_override=s3_lake.endpoint, region=REGION)
    day = date.fromisoformat(LENDING_DAY)
    [drop] = simulate(
        SimulationConfig(seed=7, start=day, scale=0.2), day, day, LandingZone(landing_s3, f"{s3_lake.bucket}/landing")
    )
    assert s3_lake.key_of(f"s3://{s3_lake.bucket}/landing/{drop.manifest_key}") in s3_lake.keys("landing/")
    monkeypatch.setenv(LANDING_URI_ENV, f"s3://{s3_lake.bucket}/landing")
    monkeypatch.setenv(PII_KEY_ENV, TEST_PII_KEY)
    monkeypatch.setenv(ALERT_WEBHOOK_URL_ENV, "http://127.0.0.1:9/alerts-are-not-sent-by-this-run")
    monkeypatch.setenv("BATCH_PLATFORM_ENV", "PROD")

    result = dg.materialize(
        [*raw_assets, *core_assets, *reporting_assets],
        resources=build_definitions("PROD").resources,  # the shared and the domain's, EnvVars resolved at run start
        instance=postgres_instance,
        partition_key=LENDING_DAY,
    )

    assert result.success
    failed_checks = [
        (e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations() if not e.passed
    ]
    assert failed_checks == []
    lake = s3_lake.lake

    # Raw: every row of the drop is loaded or quarantined, exactly once.
    quarantine = lake.read_arrow(RAW_QUARANTINE, [LENDING_DAY])
    for dataset in DATASETS:
        quarantined = pc.sum(pc.equal(quarantine["dataset"], dataset)).as_py() or 0
        assert partition_rows(lake, RAW_TABLES[dataset], LENDING_DAY) + quarantined == drop.rows(dataset), dataset
    # Every materialization's row count is what its table holds for the day, read back from S3.
    materializations = {
        e.materialization.asset_key: e.materialization for e in result.get_asset_materialization_events()
    }
    expected_keys = {key for assets in (raw_assets, core_assets, reporting_assets) for a in assets for key in a.keys}
    assert set(materializations) == expected_keys
    for key, event in materializations.items():
        assert event.partition == LENDING_DAY
        if key == LOAN_BOOK_INPUTS:
            continue  # the loan book's barrier asset writes no table
        assert event.metadata["dagster/row_count"].value == partition_rows(lake, LENDING_TABLES[key], LENDING_DAY), key
    assert partition_rows(lake, CORE_LOANS, LENDING_DAY) == drop.rows("loans") > 0
    assert partition_rows(lake, CORE_LOAN_DAILY_STATUS, LENDING_DAY) > 0
    assert partition_rows(lake, REPORTING_PORTFOLIO_DAILY, LENDING_DAY) > 0

    # Every table's metadata, read as raw objects, names its files s3:// only, in the warehouse bucket.
    catalog = lake.catalog()
    identifiers = [i for ns in ("raw", "core", "reporting") for i in catalog.list_tables(ns)]
    assert len(identifiers) == len(expected_keys - {LOAN_BOOK_INPUTS})
    for identifier in identifiers:
        location = catalog.load_table(identifier).location()
        assert location.startswith(f"{s3_lake.warehouse}/"), identifier
        leaking = [k for k, content in metadata_objects(s3_lake, location).items() if b"s3a://" in content]
        assert leaking == [], identifier

    # The run, its materializations and its check results are rows in PostgreSQL.
    engine = sa.create_engine(postgres_server.sqlalchemy_uri(pg_database), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM runs WHERE run_id = :r"), {"r": result.run_id}).scalar_one()
        events = conn.execute(
            sa.text(
                "SELECT dagster_event_type, asset_key, partition FROM event_logs "
                "WHERE run_id = :r AND dagster_event_type IN ('ASSET_MATERIALIZATION', 'ASSET_CHECK_EVALUATION')"
            ),
            {"r": result.run_id},
        ).all()
    engine.dispose()
    assert status == "SUCCESS"
    stored = {(r.asset_key, r.partition) for r in events if r.dagster_event_type == "ASSET_MATERIALIZATION"}
    assert stored == {(json.dumps(list(k.path)), LENDING_DAY) for k in expected_keys}
    assert sum(r.dagster_event_type == "ASSET_CHECK_EVALUATION" for r in events) == len(
        result.get_asset_check_evaluations()
    )
